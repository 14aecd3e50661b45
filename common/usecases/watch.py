"""Watch jobs: objects that land under a watch job's prefix after it was created join it (each once), until the
job is closed; closing completes it once the images in flight are done."""
from __future__ import annotations

from collections.abc import Callable

from common.domain.errors import InvalidRequest
from common.domain.status import JobView, status_view
from common.domain.messages import ClassifyMessage
from common.logs import get_logger
from common.usecases.lookup import existing_job
from common.ports import Arrivals, Publisher, RetryableFailures

log = get_logger("watch")


class ObjectArrived:
    """An object was written (a storage notification, a file event): every open watch job whose prefix holds it
    registers it once and has it classified."""

    def __init__(self, jobs: Arrivals, publisher: Publisher, retries: RetryableFailures | None) -> None:
        """retries None: the store keeps no failures that may pass later (the cloud's: Pub/Sub redelivers)."""
        self._jobs = jobs
        self._publisher = publisher
        self._retries = retries  # an object seen again after a failure that may pass is classified again

    def __call__(self, bucket: str, name: str, content: str | None = None) -> list[str]:
        """The ids of the jobs the object joined."""
        if name.endswith("/"):
            return []
        joined = []
        for job in self._jobs.watch_jobs(bucket):
            if not name.startswith(job.spec.source_prefix):
                continue
            if self._jobs.register_arrival(job.id, name) or \
                    (self._retries is not None and self._retries.forget_retryable_failures(job.id, [name])):
                self._publisher.publish_all([ClassifyMessage.for_job(job, name, content)])
                joined.append(job.id)
        if joined:
            log.info("object arrived", extra={"object": name, "jobs": joined})
        return joined


class CloseJob:
    """Stop a watch job taking arrivals; it completes (and is announced) once its images are done."""

    def __init__(self, jobs: Arrivals, announce: Callable[[str], bool]) -> None:
        self._jobs = jobs
        self._announce = announce

    def __call__(self, job_id: str) -> JobView:
        job = existing_job(self._jobs, job_id)
        job_id = job.id
        if not job.spec.watch:
            raise InvalidRequest(f"job {job_id} is not a watch job: it completes by itself", field="id")
        if not job.closed:  # closing twice (a retried request) is the same as closing once
            self._jobs.close_job(job_id)
        self._announce(job_id)  # nothing in flight: complete now
        return status_view(existing_job(self._jobs, job_id), self._jobs.counters(job_id))
