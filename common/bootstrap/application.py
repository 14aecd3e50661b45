"""An application: every use case, built on first use from a set of ports, any of which a keyword replaces."""
from __future__ import annotations

from collections.abc import Callable
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING, Any

from common.config import Settings
from common.domain.options import Backend
from common.usecases.announce_completion import AnnounceCompletion
from common.usecases.correct_job import CorrectJob, KeptCorrections
from common.usecases.create_job import CreateJob, ResumeJob, RetryJob
from common.usecases.dead_letter import RecordDeadLetter
from common.usecases.job_status import JobStatus
from common.usecases.report_job import ReportJob
from common.usecases.runner import RecentJobs
from common.usecases.undo_job import UndoJob
from common.usecases.upload import UploadFolder
from common.usecases.watch import CloseJob, ObjectArrived

if TYPE_CHECKING:
    from common.adapters.background import BoundedWorkers
    from common.bootstrap.ports import CloudPorts, LocalPorts
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
                         announce=self.announce, detector=self.has_detector, corrections=self.port("corrections"),
                         resume=self.resume_job)

    @cached_property
    def retry_job(self) -> RetryJob:
        return RetryJob(self.port("jobs"), self.resume_job)

    @cached_property
    def resume_job(self) -> ResumeJob:
        return ResumeJob(self.port("objects"), self.port("jobs"), self.port("publisher"), self.port("retries"))

    @cached_property
    def job_status(self) -> JobStatus:
        return JobStatus(self.port("jobs"), self.has_detector)

    @cached_property
    def undo_job(self) -> UndoJob:
        return UndoJob(self.port("objects"), self.port("jobs"))

    @cached_property
    def correct_job(self) -> CorrectJob:
        return CorrectJob(self.port("objects"), self.port("jobs"), self.port("corrections"))

    @cached_property
    def kept_corrections(self) -> KeptCorrections:
        return KeptCorrections(self.port("corrections"), self.port("jobs"), self.settings.bucket)

    @cached_property
    def dead_letter(self) -> RecordDeadLetter:
        return RecordDeadLetter(self.port("jobs"), self.port("results"), self.port("jobs"), self.announce)

    @cached_property
    def close_job(self) -> CloseJob:
        return CloseJob(self.port("jobs"), self.announce)

    @cached_property
    def object_arrived(self) -> ObjectArrived:
        return ObjectArrived(self.port("jobs"), self.port("publisher"), self.port("retries"))

    @cached_property
    def report(self) -> ReportJob:
        def thumbnail(data: bytes, box: tuple[float, float, float, float] | None = None,
                      full: bool = False) -> bytes | None:
            from common.inference.thumbnails import make_full_photo, make_thumbnail  # Pillow only for a page

            return make_full_photo(data) if full else make_thumbnail(data, box)

        return ReportJob(self.port("jobs"), self.port("objects"), thumbnail, self.job_status)

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

    @property
    def background(self) -> Any:
        """Where work off the request path runs: the process's pool unless a test gives its own."""
        return self._overrides["background"] if "background" in self._overrides else background_workers()

    @cached_property
    def announce(self) -> AnnounceCompletion:
        return AnnounceCompletion(self.port("jobs"), self.port("events"), self.deliver_callback, self.background)

    @cached_property
    def classify_image(self) -> ClassifyImage:
        from common.inference.classifier import model_fingerprint
        from common.inference.decoding import decode_image
        from common.usecases.classify_image import ClassifyImage

        model_key = self._overrides.get("model_key", model_fingerprint(model_config(self.settings)))
        detector, detector_key = self._detector()
        jobs = self.port("results")
        announce: Any = self.announce
        if hasattr(jobs, "on_counted"):  # a store that counts in batches announces after each of its commits
            jobs.on_counted(self.announce)
            announce = None
        # Files on a disk may be read while still being written (a truncated read is retried); objects are whole.
        return ClassifyImage(self.port("objects"), self.port("results"), self.load_model,
                             self._overrides.get("decode", decode_image), self.port("predictions"), model_key,
                             announce, retry_truncated=self.settings.backend == Backend.LOCAL,
                             detector=detector, detector_key=detector_key, corrections=self.port("corrections"),
                             jobs=self.port("jobs"))

    @property
    def has_detector(self) -> bool:
        return "detector" in self._overrides or bool(self.settings.detector_model)

    def _detector(self) -> tuple[Callable[[], Any] | None, str | None]:
        """(a loader of the process's detector, its fingerprint), or (None, None) when none is configured."""
        if "detector" in self._overrides:
            return self._overrides["detector"], self._overrides.get("detector_key")
        path = self.settings.detector_model
        if not path:
            return None, None
        from common.inference.loader import detector_fingerprint, load_detector

        cache = self.settings.weights_cache_dir
        return (lambda: load_detector(path, cache)), detector_fingerprint(path)

    @cached_property
    def recent_jobs(self) -> RecentJobs:
        return RecentJobs(self.port("jobs"))

    def upload_folder(self, source: Any) -> UploadFolder:
        return UploadFolder(source, self.port("objects"))
