"""The composition root: the only module that knows which adapter serves which port.

`from_env` builders (one handler per function, built on first use and kept: module-level clients created once)
serve the Cloud Functions; `build_local` wires the embedded runner (a folder, SQLite, a thread pool). Nothing
imports a cloud SDK, NumPy or a model runtime until a builder that needs it runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from common.config import Settings
from common.domain.options import Backend
from common.usecases.create_job import CreateJob, ResumeJob
from common.usecases.job_status import JobStatus
from common.usecases.report_job import ReportJob
from common.usecases.undo_job import UndoJob

from common.domain.messages import ClassifyMessage
from common.ports import EventPublisher, JobWriter, ObjectStore, PredictionStore, ResultRecorder
from common.usecases.announce_completion import AnnounceCompletion
from common.usecases.watch import CloseJob, ObjectArrived

if TYPE_CHECKING:
    from common.adapters.background import BoundedWorkers
    from common.adapters.gcp import (FirestoreJobStore, FirestorePredictionStore, GcsObjectStore, PubSubEvents,
                                     PubSubPublisher)
    from common.adapters.local import FolderObjectStore, InProcessQueue, SqliteJobStore
    from common.inference.classifier import Classifier, ModelConfig
    from common.usecases.classify_image import ClassifyImage


def model_config(settings: Settings) -> ModelConfig:
    from common.inference.classifier import ModelConfig

    return ModelConfig(model=settings.model, weights=settings.weights, runtime=settings.runtime,
                       cache_dir=settings.weights_cache_dir)


def classifier_loader(settings: Settings) -> Callable[[], Classifier]:
    """A zero-argument callable returning the process's cached classifier (loaded on first call)."""
    from common.inference.loader import load_classifier

    config = model_config(settings)
    return lambda: load_classifier(config)


def classify_image(objects: ObjectStore, results: ResultRecorder, settings: Settings,
                   predictions: PredictionStore | None = None,
                   announce: Callable[[str], bool] | None = None) -> ClassifyImage:
    """Files on a disk may be read while still being written (a truncated read is retried); objects are whole."""
    from common.inference.classifier import model_fingerprint
    from common.inference.decoding import decode_image
    from common.usecases.classify_image import ClassifyImage

    return ClassifyImage(objects, results, classifier_loader(settings), decode_image, predictions,
                         model_fingerprint(model_config(settings)), announce,
                         retry_truncated=settings.backend == Backend.LOCAL)


@lru_cache(maxsize=1)
def background_workers() -> BoundedWorkers:
    """The process's few threads for work off the request path (callbacks), created on first use."""
    from common.adapters.background import BoundedWorkers

    return BoundedWorkers()


def announcer(jobs: JobWriter, events: EventPublisher | None, settings: Settings) -> AnnounceCompletion:
    from common.adapters.http_callbacks import HttpCallbackSender
    from common.usecases.deliver_callback import DeliverCallback

    deliver = DeliverCallback(jobs, HttpCallbackSender(settings.callback_policy), settings.service_key)
    return AnnounceCompletion(jobs, events, deliver, background_workers())


# --- GCP (deployed, or the emulators when *_EMULATOR_HOST is set) ------------------------------------------------
def gcp_object_store(settings: Settings) -> GcsObjectStore:
    from common.adapters.gcp import GcsObjectStore, storage_client

    return GcsObjectStore(storage_client(settings.project))


def gcp_job_store(settings: Settings) -> FirestoreJobStore:
    from google.cloud import firestore

    from common.adapters.gcp import FirestoreJobStore

    return FirestoreJobStore(firestore.Client(project=settings.project), settings.jobs_collection,
                             settings.counter_shards)


def gcp_prediction_store(settings: Settings) -> FirestorePredictionStore:
    from google.cloud import firestore

    from common.adapters.gcp import FirestorePredictionStore

    return FirestorePredictionStore(firestore.Client(project=settings.project), settings.predictions_collection)


def gcp_events(settings: Settings) -> PubSubEvents | None:
    if not settings.job_events_topic:
        return None
    from common.adapters.gcp import PubSubEvents, PubSubPublisher

    client = PubSubPublisher.make_client()
    return PubSubEvents(client, client.topic_path(settings.project, settings.job_events_topic))


def gcp_publisher(settings: Settings) -> PubSubPublisher:
    from common.adapters.gcp import PubSubPublisher

    client = PubSubPublisher.make_client()
    return PubSubPublisher(client, client.topic_path(settings.project, settings.topic))


# --- Local (the embedded runner: `imgclassify run/serve`) --------------------------------------------------------
def local_db_path(root: str | Path) -> Path:
    from common.adapters.local import STATE_DIR

    return Path(root) / STATE_DIR / "jobs.sqlite3"


@dataclass
class LocalApp:
    """Every use case over one folder, sharing one job store and one in-process queue."""

    settings: Settings
    objects: FolderObjectStore
    jobs: SqliteJobStore
    queue: InProcessQueue
    create_job: CreateJob
    resume_job: ResumeJob
    job_status: JobStatus
    undo_job: UndoJob
    classify_image: ClassifyImage
    load_model: Callable[[], Classifier]
    close_job: CloseJob
    object_arrived: ObjectArrived
    announce: AnnounceCompletion
    report: ReportJob


def build_local(settings: Settings, workers: int = 2) -> LocalApp:
    from common.adapters.local import (FolderObjectStore, InProcessQueue, JsonLinesEvents, SqliteJobStore,
                                       SqlitePredictionStore)
    from common.domain.jobs import DEFAULT_SOURCE_PREFIX
    from common.domain.results import ImageResult

    # The photos are read from DIR/all (wherever a link there points) or from the folder given with --out's
    # PHOTOS; copies are written under DIR only.
    photos = settings.local_photos or str(Path(settings.local_root) / DEFAULT_SOURCE_PREFIX)
    objects = FolderObjectStore(settings.local_root, sources={DEFAULT_SOURCE_PREFIX: photos})
    jobs = SqliteJobStore(local_db_path(settings.local_root))
    announce = announcer(jobs, JsonLinesEvents(local_db_path(settings.local_root).with_name("events.jsonl")),
                         settings)

    def record_give_up(message: ClassifyMessage, reason: str, retryable: bool) -> None:
        if jobs.record_result(message.job_id, ImageResult.failure(message.name, reason, retryable)):
            announce(message.job_id)

    # Retried for about 15 s: long enough for a disk that is briefly full or a file still being copied in.
    queue = InProcessQueue(workers=workers, max_attempts=6, backoff=0.5, on_give_up=record_give_up)
    classify = classify_image(objects, jobs, settings, SqlitePredictionStore(local_db_path(settings.local_root)),
                              announce)
    queue.subscribe(classify)
    return LocalApp(settings, objects, jobs, queue,
                    create_job=CreateJob(objects, jobs, queue, settings.job_defaults, announce=announce),
                    resume_job=ResumeJob(objects, jobs, queue, retries=jobs), job_status=JobStatus(jobs),
                    undo_job=UndoJob(objects, jobs), classify_image=classify, load_model=classifier_loader(settings),
                    close_job=CloseJob(jobs, announce), object_arrived=ObjectArrived(jobs, queue, retries=jobs),
                    announce=announce,
                    report=report_job(jobs, objects))


# --- One handler per function, from the environment ---------------------------------------------------------------
@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()


@lru_cache(maxsize=1)
def _local_app() -> LocalApp:
    return build_local(settings())


Handler = TypeVar("Handler")


def _per_backend(local: Callable[[LocalApp], Handler], gcp: Callable[[Settings], Handler]) -> Handler:
    """The embedded app's handler when BACKEND=local, else the one built over the GCP adapters."""
    config = settings()
    return local(_local_app()) if config.backend == Backend.LOCAL else gcp(config)


def report_job(jobs: JobWriter, objects: ObjectStore) -> ReportJob:
    def thumbnail(data: bytes) -> bytes | None:
        from common.inference.thumbnails import make_thumbnail  # Pillow only when a page asks for previews

        return make_thumbnail(data)

    return ReportJob(jobs, objects, thumbnail)


def _gcp_create_job(config: Settings) -> CreateJob:
    jobs = gcp_job_store(config)
    return CreateJob(gcp_object_store(config), jobs, gcp_publisher(config), config.job_defaults,
                     announce=announcer(jobs, gcp_events(config), config))


def _gcp_classify_image(config: Settings) -> ClassifyImage:
    jobs = gcp_job_store(config)
    return classify_image(gcp_object_store(config), jobs, config, gcp_prediction_store(config),
                          announcer(jobs, gcp_events(config), config))


def _gcp_close_job(config: Settings) -> CloseJob:
    jobs = gcp_job_store(config)
    return CloseJob(jobs, announcer(jobs, gcp_events(config), config))


@lru_cache(maxsize=1)
def create_job_handler() -> CreateJob:
    return _per_backend(lambda app: app.create_job, _gcp_create_job)


@lru_cache(maxsize=1)
def job_status_handler() -> JobStatus:
    return _per_backend(lambda app: app.job_status, lambda config: JobStatus(gcp_job_store(config)))


@lru_cache(maxsize=1)
def undo_job_handler() -> UndoJob:
    return _per_backend(lambda app: app.undo_job,
                        lambda config: UndoJob(gcp_object_store(config), gcp_job_store(config)))


@lru_cache(maxsize=1)
def classify_image_handler() -> ClassifyImage:
    return _per_backend(lambda app: app.classify_image, _gcp_classify_image)


@lru_cache(maxsize=1)
def report_handler() -> ReportJob:
    return _per_backend(lambda app: app.report,
                        lambda config: report_job(gcp_job_store(config), gcp_object_store(config)))


@lru_cache(maxsize=1)
def close_job_handler() -> CloseJob:
    return _per_backend(lambda app: app.close_job, _gcp_close_job)


@lru_cache(maxsize=1)
def object_arrived_handler() -> ObjectArrived:
    return _per_backend(lambda app: app.object_arrived,
                        lambda config: ObjectArrived(gcp_job_store(config), gcp_publisher(config)))
