"""The ports an application is built over, as one typed value: the cloud's (`cloud_ports`), a folder's
(`local_ports`) and, in tests, the fakes (tests/fakes.py `memory_ports`). Tests replace a field with
`dataclasses.replace` — what they run is what production runs, with their doubles where they put them.

Each adapter is made on first use (`lazy`): a function builds only the clients it needs, and the HTTP functions
never import NumPy, Pillow or a model runtime.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar, cast

from werkzeug.local import LocalProxy

from common.config import Settings
from common.domain.jobs import DEFAULT_SOURCE_PREFIX, STATE_DIR
from common.domain.options import Backend
from common.usecases.clock import utc_now_iso
from common.ports import (BackgroundWork, CallbackSender, Classifier, Corrections, Detector, EventPublisher,
                          JobStore, ObjectStore, PredictionStore, Publisher, RetryableFailures)

if TYPE_CHECKING:
    from common.adapters.local import InProcessQueue
    from common.inference.classifier import ModelConfig
    from common.usecases.photo_vectors import Decoder

T = TypeVar("T")


def lazy(make: Callable[[], T]) -> T:
    """What `make` makes, made on first use and kept: a proxy that stands for it (werkzeug's LocalProxy)."""
    return cast(T, LocalProxy(cache(make)))


def database_path(root: str | Path) -> Path:
    return Path(root) / STATE_DIR / "jobs.sqlite3"


@dataclass(frozen=True)
class Inference:
    """The model side of classify_image: the process's classifier (loaded on first call), its fingerprint (the
    prediction store's key), the decoder of untrusted images, and the object detector when one is configured."""

    classifier: Callable[[], Classifier]
    model_key: str | None  # None: predictions are not stored (random weights differ on every load)
    decode: Decoder
    detector: Callable[[], Detector] | None  # None: no object detector configured
    detector_key: str | None  # the detector build's fingerprint (its answers' key in the prediction store)


@dataclass(frozen=True)
class Ports:
    """Every collaborator the use cases have, each typed by its Protocol (common/ports.py)."""

    objects: ObjectStore
    jobs: JobStore
    publisher: Publisher
    predictions: PredictionStore
    corrections: Corrections
    callbacks: CallbackSender
    background: BackgroundWork
    inference: Inference
    events: EventPublisher | None = None
    retries: RetryableFailures | None = None  # where failures that may pass later are recorded (a folder)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], str] = utc_now_iso  # the time the use cases record (ISO 8601, UTC)


def model_config(settings: Settings) -> ModelConfig:
    from common.inference.classifier import ModelConfig

    return ModelConfig(model=settings.model, weights=settings.weights, runtime=settings.runtime,
                       cache_dir=settings.weights_cache_dir)


@cache
def background_workers() -> BackgroundWork:
    """The process's few threads for work off the request path (callbacks), created on first use."""
    from common.adapters.background import BoundedWorkers

    return BoundedWorkers()


def inference(settings: Settings) -> Inference:
    from common.inference.classifier import model_fingerprint
    from common.inference.decoding import decode_image
    from common.inference.loader import detector_fingerprint, load_classifier, load_detector

    config = model_config(settings)
    path, cache_dir = settings.detector_model, settings.weights_cache_dir
    return Inference(classifier=lambda: load_classifier(config), model_key=model_fingerprint(config),
                     decode=decode_image, detector=(lambda: load_detector(path, cache_dir)) if path else None,
                     detector_key=detector_fingerprint(path) if path else None)


def _callbacks(settings: Settings) -> CallbackSender:
    from common.adapters.http_callbacks import HttpCallbackSender

    return HttpCallbackSender(settings.callback_policy)


def cloud_ports(settings: Settings) -> Ports:
    """Cloud Storage, Firestore and Pub/Sub (the emulators when *_EMULATOR_HOST is set); clients made once."""
    from common.bootstrap import cloud

    firestore = lazy(lambda: cloud.firestore_client(settings))
    pubsub = lazy(cloud.pubsub_client)
    events = lazy(lambda: cloud.events(pubsub, settings)) if settings.job_events_topic else None
    return Ports(objects=lazy(lambda: cloud.objects(settings)), jobs=lazy(lambda: cloud.jobs(firestore, settings)),
                 publisher=lazy(lambda: cloud.publisher(pubsub, settings)),
                 predictions=lazy(lambda: cloud.predictions(firestore, settings)),
                 corrections=lazy(lambda: cloud.corrections(firestore)), callbacks=lazy(lambda: _callbacks(settings)),
                 background=lazy(background_workers), inference=lazy(lambda: inference(settings)), events=events)


def local_ports(settings: Settings, queue: InProcessQueue | None = None, workers: int = 2) -> Ports:
    """A folder (photos read from DIR/all, wherever a link there points, or from --out's PHOTOS; copies written
    under DIR only), SQLite in DIR/.imgclassify, and a thread pool (`queue`) as the publisher."""
    from common.adapters.local import (FolderObjectStore, InProcessQueue, JsonLinesEvents, SqliteJobStore,
                                       SqlitePredictionStore)

    root = Path(settings.local_root)
    photos = settings.local_photos or str(root / DEFAULT_SOURCE_PREFIX)
    jobs = lazy(lambda: SqliteJobStore(database_path(root)))
    predictions = lazy(lambda: SqlitePredictionStore(database_path(root)))  # corrections: the same database
    # Retried for about 15 s: long enough for a disk that is briefly full or a file still being copied in.
    publisher = queue if queue is not None else InProcessQueue(workers=workers, max_attempts=6, backoff=0.5)
    return Ports(objects=lazy(lambda: FolderObjectStore(root, sources={DEFAULT_SOURCE_PREFIX: photos,
                                                                       **dict(settings.local_sources)})),
                 jobs=jobs, publisher=publisher, predictions=predictions, corrections=predictions,
                 callbacks=lazy(lambda: _callbacks(settings)), background=lazy(background_workers),
                 inference=lazy(lambda: inference(settings)),
                 events=lazy(lambda: JsonLinesEvents(database_path(root).with_name("events.jsonl"))), retries=jobs)


def ports_for(settings: Settings) -> Ports:
    return local_ports(settings) if settings.backend == Backend.LOCAL else cloud_ports(settings)
