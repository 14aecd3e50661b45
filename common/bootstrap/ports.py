"""The two sets of ports an application is built over: the cloud's and a folder's. Each adapter is made on first
use, so a function builds only the clients it needs."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.config import Settings
from common.domain.jobs import STATE_DIR

if TYPE_CHECKING:
    from common.adapters.local import InProcessQueue


def database_path(root: str | Path) -> Path:
    return Path(root) / STATE_DIR / "jobs.sqlite3"


class CloudPorts:
    """Cloud Storage, Firestore and Pub/Sub (the emulators when *_EMULATOR_HOST is set); clients made once."""

    retries = None  # a bucket's objects appear whole: no failure there is retryable later

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def _firestore(self) -> Any:
        from google.cloud import firestore

        return firestore.Client(project=self.settings.project)

    @cached_property
    def _pubsub(self) -> Any:
        from common.adapters.gcp import PubSubPublisher

        return PubSubPublisher.make_client()

    @cached_property
    def objects(self) -> Any:
        from common.adapters.gcp import GcsObjectStore, storage_client

        return GcsObjectStore(storage_client(self.settings.project))

    @cached_property
    def jobs(self) -> Any:
        from common.adapters.gcp import FirestoreJobStore

        return FirestoreJobStore(self._firestore, self.settings.jobs_collection, self.settings.counter_shards)

    @cached_property
    def predictions(self) -> Any:
        from common.adapters.gcp import FirestorePredictionStore

        return FirestorePredictionStore(self._firestore, self.settings.predictions_collection)

    @cached_property
    def corrections(self) -> Any:
        from common.adapters.gcp_corrections import FirestoreCorrections

        return FirestoreCorrections(self._firestore)

    @cached_property
    def publisher(self) -> Any:
        from common.adapters.gcp import PubSubPublisher

        return PubSubPublisher(self._pubsub, self._pubsub.topic_path(self.settings.project, self.settings.topic))

    @cached_property
    def events(self) -> Any:
        if not self.settings.job_events_topic:
            return None
        from common.adapters.gcp import PubSubEvents

        return PubSubEvents(self._pubsub, self._pubsub.topic_path(self.settings.project,
                                                                  self.settings.job_events_topic))


class LocalPorts:
    """A folder (photos read from DIR/all, wherever a link there points, or from --out's PHOTOS; copies written
    under DIR only), SQLite in DIR/.imgclassify, and a thread pool as the queue."""

    def __init__(self, settings: Settings, workers: int = 2) -> None:
        self.settings = settings
        self.root = Path(settings.local_root)
        self._workers = workers

    @cached_property
    def objects(self) -> Any:
        from common.adapters.local import FolderObjectStore
        from common.domain.jobs import DEFAULT_SOURCE_PREFIX

        photos = self.settings.local_photos or str(self.root / DEFAULT_SOURCE_PREFIX)
        return FolderObjectStore(self.root, sources={DEFAULT_SOURCE_PREFIX: photos, **dict(self.settings.local_sources)})

    @cached_property
    def jobs(self) -> Any:
        from common.adapters.local import SqliteJobStore

        return SqliteJobStore(database_path(self.root))

    @cached_property
    def predictions(self) -> Any:
        from common.adapters.local import SqlitePredictionStore

        return SqlitePredictionStore(database_path(self.root))

    @property
    def corrections(self) -> Any:
        return self.predictions  # the same database: one connection

    @cached_property
    def publisher(self) -> InProcessQueue:
        from common.adapters.local import InProcessQueue

        # Retried for about 15 s: long enough for a disk that is briefly full or a file still being copied in.
        return InProcessQueue(workers=self._workers, max_attempts=6, backoff=0.5)

    @cached_property
    def events(self) -> Any:
        from common.adapters.local import JsonLinesEvents

        return JsonLinesEvents(database_path(self.root).with_name("events.jsonl"))

    @property
    def retries(self) -> Any:
        return self.jobs
