"""The embedded runner's application: the use cases over one folder, its in-process queue, its lifecycle."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from common.bootstrap.application import Application
from common.bootstrap.ports import Ports
from common.config import Settings
from common.domain.messages import ClassifyMessage
from common.domain.results import ImageResult
from common.usecases.runner import AdmitJob, FindResumableJob, ListJobs, PickJob, ResumeUnfinished

if TYPE_CHECKING:
    from common.adapters.local import InProcessQueue
    from common.adapters.local.arrivals import FolderArrivals


class LocalApplication(Application):
    """The embedded runner: the use cases over one folder, its queue (the ports' publisher) delivering to
    classify_image in-process."""

    def __init__(self, settings: Settings, ports: Ports, queue: InProcessQueue) -> None:
        super().__init__(settings, ports)
        self.root = Path(settings.local_root)
        self._queue = queue

    @cached_property
    def queue(self) -> InProcessQueue:
        self._queue.subscribe(self.classify_image, on_give_up=self._record_give_up,
                              batch=self.classify_image.deliver_batch)
        return self._queue

    def _record_give_up(self, message: ClassifyMessage, reason: str, retryable: bool) -> None:
        """A message the queue could not deliver: its image is failed with the reason, so its job finishes."""
        if self.ports.jobs.record_result(message.job_id, ImageResult.failure(message.name, reason, retryable)):
            self.announce(message.job_id)

    @cached_property
    def find_resumable(self) -> FindResumableJob:
        return FindResumableJob(self.ports.jobs, self.settings.job_defaults)

    @cached_property
    def resume_unfinished(self) -> ResumeUnfinished:
        return ResumeUnfinished(self.ports.jobs, self.resume_job)

    @cached_property
    def pick_job(self) -> PickJob:
        return PickJob(self.ports.jobs)

    @cached_property
    def list_jobs(self) -> ListJobs:
        return ListJobs(self.ports.jobs, self.ports.objects)

    def admit(self, max_queued: int) -> AdmitJob:
        return AdmitJob(self.create_job, self.queue.backlog, max_queued, retry=self.retry_job)

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
        return self.ports.background.drain(timeout)

    def arrivals(self, photos: Path) -> FolderArrivals:
        """Files landing under photos (filesystem events, each once it stops changing) join the watch jobs."""
        from common.adapters.local.arrivals import FolderArrivals

        return FolderArrivals(photos, lambda name: self.object_arrived("local", name))
