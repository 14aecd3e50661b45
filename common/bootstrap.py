"""The composition root: the only module that knows which adapter serves which port.

An `Application` is every use case, built on first use from a set of ports: `CloudPorts` (Cloud Storage,
Firestore, Pub/Sub, or their emulators) or `LocalPorts` (a folder, SQLite, a thread pool). Any port can be
replaced by a keyword (`objects=`, `jobs=`, `results=`, `publisher=`, `predictions=`, `events=`, `classifier=`,
`callbacks=`, `background=`, `queue=`, `model_key=`): the tests and the test-only function target build through
here. Nothing imports a cloud SDK, NumPy or a model runtime until a use case that needs it is first asked for.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.config import Settings
from common.domain.jobs import STATE_DIR
from common.domain.messages import ClassifyMessage
from common.domain.options import Backend
from common.domain.results import ImageResult
from common.routes import Action
from common.usecases.announce_completion import AnnounceCompletion
from common.usecases.create_job import CreateJob, ResumeJob
from common.usecases.job_status import JobStatus
from common.usecases.report_job import ReportJob
from common.usecases.runner import AdmitJob, FindResumableJob, ListJobs, PickJob, RecentJobs, ResumeUnfinished
from common.usecases.undo_job import UndoJob
from common.usecases.upload import UploadFolder
from common.usecases.watch import CloseJob, ObjectArrived

if TYPE_CHECKING:
    from common.adapters.background import BoundedWorkers
    from common.adapters.local import FolderLock, InProcessQueue
    from common.adapters.local.arrivals import FolderArrivals
    from common.inference.classifier import ModelConfig
    from common.ports import Classifier
    from common.usecases.classify_image import ClassifyImage
    from common.usecases.deliver_callback import DeliverCallback



def model_config(settings: Settings) -> ModelConfig:
    from common.inference.classifier import ModelConfig

    return ModelConfig(model=settings.model, weights=settings.weights, runtime=settings.runtime,
                       cache_dir=settings.weights_cache_dir)


@lru_cache(maxsize=1)
def background_workers() -> BoundedWorkers:
    """The process's few threads for work off the request path (callbacks), created on first use."""
    from common.adapters.background import BoundedWorkers

    return BoundedWorkers()


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
        return FolderObjectStore(self.root, sources={DEFAULT_SOURCE_PREFIX: photos})

    @cached_property
    def jobs(self) -> Any:
        from common.adapters.local import SqliteJobStore

        return SqliteJobStore(database_path(self.root))

    @cached_property
    def predictions(self) -> Any:
        from common.adapters.local import SqlitePredictionStore

        return SqlitePredictionStore(database_path(self.root))

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


def database_path(root: str | Path) -> Path:
    return Path(root) / STATE_DIR / "jobs.sqlite3"


def has_jobs(root: str | Path) -> bool:
    return database_path(root).exists()


def log_path(root: str | Path) -> Path:
    path = Path(root) / STATE_DIR / "log.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def lock_folder(root: str | Path, command: str) -> FolderLock:
    """One writer per folder: held until released or the process ends (the kernel drops it then)."""
    from common.adapters.local import FolderLock

    return FolderLock(Path(root) / STATE_DIR, command).acquire()


class Application:
    """Every use case over one set of ports, each built on first use and kept."""

    def __init__(self, settings: Settings, ports: CloudPorts | LocalPorts, **overrides: Any) -> None:
        self.settings = settings
        self._ports = ports
        self._overrides = overrides

    def port(self, name: str) -> Any:
        if name in self._overrides:
            return self._overrides[name]
        if name == "results":
            return self.port("jobs")
        return getattr(self._ports, name)

    @cached_property
    def load_model(self) -> Callable[[], Classifier]:
        """A zero-argument callable returning the process's cached classifier (loaded on first call)."""
        if "classifier" in self._overrides:
            return self._overrides["classifier"]
        from common.inference.loader import load_classifier

        config = model_config(self.settings)
        return lambda: load_classifier(config)

    @cached_property
    def create_job(self) -> CreateJob:
        return CreateJob(self.port("objects"), self.port("jobs"), self.port("publisher"), self.settings.job_defaults,
                         announce=self.announce)

    @cached_property
    def resume_job(self) -> ResumeJob:
        return ResumeJob(self.port("objects"), self.port("jobs"), self.port("publisher"), self.port("retries"))

    @cached_property
    def job_status(self) -> JobStatus:
        return JobStatus(self.port("jobs"))

    @cached_property
    def undo_job(self) -> UndoJob:
        return UndoJob(self.port("objects"), self.port("jobs"))

    @cached_property
    def close_job(self) -> CloseJob:
        return CloseJob(self.port("jobs"), self.announce)

    @cached_property
    def object_arrived(self) -> ObjectArrived:
        return ObjectArrived(self.port("jobs"), self.port("publisher"), self.port("retries"))

    @cached_property
    def report(self) -> ReportJob:
        def thumbnail(data: bytes) -> bytes | None:
            from common.inference.thumbnails import make_thumbnail  # Pillow only when a page asks for previews

            return make_thumbnail(data)

        return ReportJob(self.port("jobs"), self.port("objects"), thumbnail)

    @cached_property
    def deliver_callback(self) -> DeliverCallback:
        from common.usecases.deliver_callback import DeliverCallback

        if "callbacks" in self._overrides:
            sender = self._overrides["callbacks"]
        else:
            from common.adapters.http_callbacks import HttpCallbackSender

            sender = HttpCallbackSender(self.settings.callback_policy)
        extra = {"sleep": self._overrides["sleep"]} if "sleep" in self._overrides else {}
        return DeliverCallback(self.port("jobs"), sender, self.settings.service_key, **extra)

    @cached_property
    def announce(self) -> AnnounceCompletion:
        background = self._overrides["background"] if "background" in self._overrides else background_workers()
        return AnnounceCompletion(self.port("jobs"), self.port("events"), self.deliver_callback, background)

    @cached_property
    def classify_image(self) -> ClassifyImage:
        from common.inference.classifier import model_fingerprint
        from common.inference.decoding import decode_image
        from common.usecases.classify_image import ClassifyImage

        model_key = self._overrides.get("model_key", model_fingerprint(model_config(self.settings)))
        # Files on a disk may be read while still being written (a truncated read is retried); objects are whole.
        return ClassifyImage(self.port("objects"), self.port("results"), self.load_model,
                             self._overrides.get("decode", decode_image), self.port("predictions"), model_key,
                             self.announce, retry_truncated=self.settings.backend == Backend.LOCAL)

    @cached_property
    def recent_jobs(self) -> RecentJobs:
        return RecentJobs(self.port("jobs"))

    def upload_folder(self, source: Any) -> UploadFolder:
        return UploadFolder(source, self.port("objects"))


class LocalApplication(Application):
    """The embedded runner: the use cases over one folder, its queue delivering to classify_image in-process."""

    def __init__(self, settings: Settings, workers: int = 2, **overrides: Any) -> None:
        super().__init__(settings, LocalPorts(settings, workers), **overrides)
        self.root = Path(settings.local_root)

    @cached_property
    def queue(self) -> InProcessQueue:
        queue = self.port("queue") if "queue" in self._overrides else self.port("publisher")
        queue.subscribe(self.classify_image, on_give_up=self._record_give_up)
        return queue

    def port(self, name: str) -> Any:
        if name == "publisher" and "queue" in self._overrides:
            return self._overrides["queue"]
        return super().port(name)

    def _record_give_up(self, message: ClassifyMessage, reason: str, retryable: bool) -> None:
        """A message the queue could not deliver: its image is failed with the reason, so its job finishes."""
        if self.port("results").record_result(message.job_id, ImageResult.failure(message.name, reason, retryable)):
            self.announce(message.job_id)

    @cached_property
    def find_resumable(self) -> FindResumableJob:
        return FindResumableJob(self.port("jobs"), self.settings.job_defaults)

    @cached_property
    def resume_unfinished(self) -> ResumeUnfinished:
        return ResumeUnfinished(self.port("jobs"), self.resume_job)

    @cached_property
    def pick_job(self) -> PickJob:
        return PickJob(self.port("jobs"))

    @cached_property
    def list_jobs(self) -> ListJobs:
        return ListJobs(self.port("jobs"), self.port("objects"))

    def admit(self, max_queued: int) -> AdmitJob:
        return AdmitJob(self.create_job, self.queue.backlog, max_queued)

    # --- the runner's lifecycle: its queue and its background work -------------------------------------------
    def start(self) -> LocalApplication:
        """Subscribe the queue before anything is published."""
        self.queue  # noqa: B018 - building it subscribes classify_image
        return self

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every published image is handled (at most timeout seconds); True if they are."""
        return self.queue.join(timeout=timeout)

    def stop(self, cancel: bool = False) -> None:
        """Stop the workers: after the images in hand, dropping the queued ones when cancel (a resume gets them)."""
        self.queue.shutdown(cancel=cancel)

    def wait_for_callbacks(self, timeout: float) -> bool:
        background = self._overrides.get("background") or background_workers()
        drain = getattr(background, "drain", None)
        return drain(timeout) if drain is not None else True

    def arrivals(self, photos: Path) -> FolderArrivals:
        """Files landing under photos (filesystem events, each once it stops changing) join the watch jobs."""
        from common.adapters.local.arrivals import FolderArrivals

        return FolderArrivals(photos, lambda name: self.object_arrived("local", name))



def local_app(settings: Settings, workers: int = 2, **overrides: Any) -> LocalApplication:
    return LocalApplication(settings, workers, **overrides).start()


def folder_app(root: Path, photos: Path | None = None) -> LocalApplication:
    """A folder's use cases for commands that read or undo jobs (no model options needed)."""
    return local_app(Settings(backend=Backend.LOCAL, local_root=str(root), local_photos=str(photos or ""),
                              bucket="local"))


def folder_objects(folder: Path) -> Any:
    """The files of a folder, as an object store to read them from (`emulate --upload`)."""
    from common.adapters.local import FolderObjectStore

    return FolderObjectStore(folder)


def cloud_app(settings: Settings, **overrides: Any) -> Application:
    return Application(settings, CloudPorts(settings), **overrides)


# --- The functions: one application per process, from the environment -------------------------------------------
@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings.from_env()


@lru_cache(maxsize=1)
def app() -> Application:
    config = settings()
    return local_app(config) if config.backend == Backend.LOCAL else cloud_app(config)


USE_CASE_OF = {Action.CREATE: "create_job", Action.STATUS: "job_status", Action.UNDO: "undo_job",
               Action.CLOSE: "close_job", Action.REPORT: "report", Action.THUMBNAIL: "report"}


def handlers(*actions: Action, application: Callable[[], Application] | None = None
             ) -> Mapping[Action, Callable[[], Any]]:
    """The use case of each action, asked of the application on first use (so a function builds only its own);
    the process's application unless another is given."""
    def current() -> Application:
        return application() if application is not None else app()

    return {action: (lambda name=USE_CASE_OF[action]: getattr(current(), name)) for action in actions}


def classify_image_handler() -> ClassifyImage:
    return app().classify_image


def object_arrived_handler() -> ObjectArrived:
    return app().object_arrived
