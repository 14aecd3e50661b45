"""An application: every use case, built on first use from one typed set of ports (common/bootstrap/ports.py)."""
from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from common.bootstrap.ports import Ports
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
from common.usecases.upload import Source, UploadFolder
from common.usecases.watch import CloseJob, ObjectArrived

if TYPE_CHECKING:
    from common.ports import Classifier
    from common.usecases.classify_image import ClassifyImage
    from common.usecases.deliver_callback import DeliverCallback


class Application:
    """Every use case over one set of ports, each built on first use and kept."""

    def __init__(self, settings: Settings, ports: Ports) -> None:
        self.settings = settings
        self.ports = ports

    @cached_property
    def create_job(self) -> CreateJob:
        return CreateJob(self.ports.objects, self.ports.jobs, self.ports.publisher, self.settings.job_defaults,
                         clock=self.ports.clock, announce=self.announce, detector=self.has_detector,
                         corrections=self.ports.corrections, resume=self.resume_job)

    @cached_property
    def retry_job(self) -> RetryJob:
        return RetryJob(self.ports.jobs, self.resume_job, self.ports.clock)

    @cached_property
    def resume_job(self) -> ResumeJob:
        return ResumeJob(self.ports.objects, self.ports.jobs, self.ports.publisher, self.ports.retries)

    @cached_property
    def job_status(self) -> JobStatus:
        return JobStatus(self.ports.jobs, self.has_detector)

    @cached_property
    def undo_job(self) -> UndoJob:
        return UndoJob(self.ports.objects, self.ports.jobs, self.ports.clock)

    @cached_property
    def correct_job(self) -> CorrectJob:
        return CorrectJob(self.ports.objects, self.ports.jobs, self.ports.corrections)

    @cached_property
    def kept_corrections(self) -> KeptCorrections:
        return KeptCorrections(self.ports.corrections, self.ports.jobs, self.settings.bucket)

    @cached_property
    def dead_letter(self) -> RecordDeadLetter:
        return RecordDeadLetter(self.ports.jobs, self.ports.jobs, self.ports.jobs, self.ports.objects, self.announce)

    @cached_property
    def close_job(self) -> CloseJob:
        return CloseJob(self.ports.jobs, self.announce)

    @cached_property
    def object_arrived(self) -> ObjectArrived:
        return ObjectArrived(self.ports.jobs, self.ports.publisher, self.ports.retries)

    @cached_property
    def report(self) -> ReportJob:
        def thumbnail(data: bytes, box: tuple[float, float, float, float] | None = None,
                      full: bool = False) -> bytes | None:
            from common.inference.thumbnails import make_full_photo, make_thumbnail  # Pillow only for a page

            return make_full_photo(data) if full else make_thumbnail(data, box)

        return ReportJob(self.ports.jobs, self.ports.objects, thumbnail, self.job_status)

    @cached_property
    def deliver_callback(self) -> DeliverCallback:
        from common.usecases.deliver_callback import DeliverCallback

        return DeliverCallback(self.ports.jobs, self.ports.callbacks, self.settings.service_key,
                               sleep=self.ports.sleep)

    @cached_property
    def announce(self) -> AnnounceCompletion:
        return AnnounceCompletion(self.ports.jobs, self.ports.events, self.deliver_callback, self.ports.background)

    @cached_property
    def classify_image(self) -> ClassifyImage:
        from common.usecases.classify_image import ClassifyImage

        model = self.ports.inference
        # A store that counts in batches (Firestore's shards) announces after each of its commits instead.
        announce = None if self.ports.jobs.on_counted(self.announce) else self.announce
        # Files on a disk may be read while still being written (a truncated read is retried); objects are whole.
        return ClassifyImage(self.ports.objects, self.ports.jobs, model.classifier, model.decode,
                             self.ports.predictions, model.model_key, self.ports.corrections, announce=announce,
                             retry_truncated=self.settings.backend == Backend.LOCAL, detector=model.detector,
                             detector_key=model.detector_key)

    def load_model(self) -> Classifier:
        return self.ports.inference.classifier()

    def examples_refusal(self) -> str | None:
        """Why this instance's model cannot learn example photos (a build without features), or None."""
        from common.usecases.learn_examples import examples_refusal

        return examples_refusal(self.load_model())

    @property
    def has_detector(self) -> bool:
        """Known from the settings alone: the HTTP functions never load the inference side to answer it."""
        return bool(self.settings.detector_model)

    @cached_property
    def recent_jobs(self) -> RecentJobs:
        return RecentJobs(self.ports.jobs)

    def upload_folder(self, source: Source) -> UploadFolder:
        return UploadFolder(source, self.ports.objects)
