"""The composition root: the only module that knows which adapter serves which port.

An `Application` is every use case, built on first use from one typed `Ports` value: `cloud_ports(settings)`
(Cloud Storage, Firestore, Pub/Sub, or their emulators) or `local_ports(settings)` (a folder, SQLite, a thread pool).
Tests build through the same functions and replace a port with `dataclasses.replace(ports, jobs=…)` (tests/fakes.py
`memory_ports` for the in-memory fakes). Nothing imports a cloud SDK, NumPy or a model runtime until a use case that
needs it is first asked for.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import IO, TYPE_CHECKING

from common.bootstrap.application import Application
from common.bootstrap.local import LocalApplication
from common.bootstrap.ports import (Inference, Ports, background_workers, cloud_ports, database_path, lazy,
                                    local_ports, model_config)
from common.config import Settings
from common.domain.jobs import STATE_DIR
from common.domain.options import Backend
from common.routes import Action

if TYPE_CHECKING:
    from common.adapters.local import FolderLock, InProcessQueue
    from common.usecases.upload import Source
    from common.usecases.classify_image import ClassifyImage
    from common.usecases.dead_letter import RecordDeadLetter
    from common.usecases.watch import ObjectArrived

__all__ = ["Application", "Inference", "LocalApplication", "Ports", "background_workers", "cloud_app",
           "cloud_ports", "database_path", "folder_app", "handlers", "lazy", "local_app", "local_ports", "model_config",
           "settings"]


def has_jobs(root: str | Path) -> bool:
    return database_path(root).exists()


LOG_MAX_BYTES = 32 * 1024 * 1024  # a folder's log.jsonl is rotated past this when a command starts...
LOG_GENERATIONS = 3  # ...keeping log.jsonl.1 to .3: a 200,000-photo library's run logs ~75 MB


def log_stream(root: str | Path) -> IO[str]:
    """DIR/.imgclassify/log.jsonl to append to: a regular file reached without following a link, rotated first
    when it has grown past LOG_MAX_BYTES."""
    from common.adapters.local.state import StateFolder

    with StateFolder(Path(root) / STATE_DIR) as state:
        state.rotate("log.jsonl", LOG_MAX_BYTES, LOG_GENERATIONS)
        return state.open_append("log.jsonl")


def read_state_file(root: str | Path, name: str) -> bytes | None:
    """A small file of DIR/.imgclassify (settings.json): None when absent, or a link, or not a regular file."""
    from common.adapters.local.state import StateFolder

    if not (Path(root) / STATE_DIR).is_dir():
        return None
    with StateFolder(Path(root) / STATE_DIR, create=False) as state:
        return state.read_bytes(name)


def write_state_file(root: str | Path, name: str, data: bytes) -> None:
    """Replace a file of DIR/.imgclassify atomically, never through a link."""
    from common.adapters.local.state import StateFolder

    with StateFolder(Path(root) / STATE_DIR) as state:
        state.write_atomic(name, data)


def lock_folder(root: str | Path, command: str) -> FolderLock:
    """One writer per folder: held until released or the process ends (the kernel drops it then)."""
    from common.adapters.local import FolderLock

    return FolderLock(Path(root) / STATE_DIR, command).acquire()


def local_app(settings: Settings, workers: int = 2, ports: Ports | None = None,
              queue: InProcessQueue | None = None) -> LocalApplication:
    """A folder's application, its queue subscribed. `ports` (made by `local_ports`, with what a test replaced)
    publishes to `queue`, the queue this application delivers from."""
    from common.adapters.local import InProcessQueue

    if queue is None:  # Retried for about 15 s: a disk briefly full, a file still being copied in.
        queue = InProcessQueue(workers=workers, max_attempts=6, backoff=0.5)
    return LocalApplication(settings, ports or local_ports(settings, queue), queue).start()


def folder_app(root: Path, photos: Path | None = None, detector_model: str = "") -> LocalApplication:
    """A folder's use cases for commands that read or undo jobs (no model options needed)."""
    return local_app(Settings(backend=Backend.LOCAL, local_root=str(root), local_photos=str(photos or ""),
                              bucket="local", detector_model=detector_model))


def folder_objects(folder: Path) -> Source:
    """The files of a folder, as an object store to read them from (`emulate --upload`)."""
    from common.adapters.local import FolderObjectStore

    return FolderObjectStore(folder)


def cloud_app(settings: Settings, ports: Ports | None = None) -> Application:
    return Application(settings, ports or cloud_ports(settings))


# --- The functions: one application per process, from the environment -------------------------------------------
@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()


@lru_cache(maxsize=1)
def app() -> Application:
    config = settings()
    return local_app(config) if config.backend == Backend.LOCAL else cloud_app(config)


# Each action's use case, as the application builds it (typed attribute reads: no lookup by name).
USE_CASES: dict[Action, Callable[[Application], object]] = {
    Action.CREATE: lambda app: app.create_job, Action.STATUS: lambda app: app.job_status,
    Action.UNDO: lambda app: app.undo_job, Action.CLOSE: lambda app: app.close_job,
    Action.REPORT: lambda app: app.report, Action.THUMBNAIL: lambda app: app.report,
    Action.CORRECT: lambda app: app.correct_job, Action.RETRY: lambda app: app.retry_job}


def handlers(*actions: Action, application: Callable[[], Application] | None = None
             ) -> Mapping[Action, Callable[[], object]]:
    """The use case of each action, asked of the application on first use (so a function builds only its own);
    the process's application unless another is given."""
    def current() -> Application:
        return application() if application is not None else app()

    def use_case(pick: Callable[[Application], object]) -> Callable[[], object]:
        return lambda: pick(current())

    return {action: use_case(USE_CASES[action]) for action in actions}


def classify_image_handler() -> ClassifyImage:
    return app().classify_image


def object_arrived_handler() -> ObjectArrived:
    return app().object_arrived


def dead_letter_handler() -> RecordDeadLetter:
    return app().dead_letter
