"""Wire the service to its adapters from Settings: `gcp` (also the emulators) or `local` (a folder)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from common.config import Settings
from common.model import ModelConfig, load_classifier
from common.service import ClassificationService


def model_config(settings: Settings) -> ModelConfig:
    return ModelConfig(model=settings.model, weights=settings.weights, runtime=settings.runtime,
                       cache_dir=settings.weights_cache_dir)


def build_gcp_service(settings: Settings, *, with_publisher: bool = True) -> ClassificationService:
    from google.cloud import firestore

    from common.adapters.gcp import FirestoreJobStore, GcsObjectStore, PubSubPublisher, storage_client

    publisher = None
    if with_publisher:
        client = PubSubPublisher.make_client()
        publisher = PubSubPublisher(client, client.topic_path(settings.project, settings.topic))
    config = model_config(settings)
    return ClassificationService(
        settings,
        objects=GcsObjectStore(storage_client(settings.project)),
        jobs=FirestoreJobStore(firestore.Client(project=settings.project), settings.jobs_collection,
                               settings.counter_shards),
        publisher=publisher,
        classifier=lambda: load_classifier(config),
    )


def local_db_path(root: str | Path) -> Path:
    from common.adapters.local import STATE_DIR

    return Path(root) / STATE_DIR / "jobs.sqlite3"


def build_local_service(settings: Settings, workers: int = 2) -> ClassificationService:
    from common.adapters.local import FolderObjectStore, InProcessQueue, SqliteJobStore

    queue = InProcessQueue(workers=workers)
    config = model_config(settings)
    service = ClassificationService(
        settings,
        objects=FolderObjectStore(settings.local_root),
        jobs=SqliteJobStore(local_db_path(settings.local_root)),
        publisher=queue,
        classifier=lambda: load_classifier(config),
    )
    queue.subscribe(service.classify)
    return service


_override: ClassificationService | None = None


def use_service(service: ClassificationService | None) -> None:
    """Make the function entry points use this service (tests with fakes); None restores the environment's."""
    global _override
    _override = service


def service_from_env(with_publisher: bool = True) -> ClassificationService:
    """One service per process, built on first request (module-level clients, created once)."""
    return _override if _override is not None else _build_from_env(with_publisher)


@lru_cache(maxsize=2)
def _build_from_env(with_publisher: bool) -> ClassificationService:
    settings = Settings.from_env()
    if settings.backend == "local":
        return build_local_service(settings)
    return build_gcp_service(settings, with_publisher=with_publisher)
