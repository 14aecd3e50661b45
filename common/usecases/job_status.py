"""Report a job: its counters and what its classes mean. A query: reads the job store, writes nothing."""
from __future__ import annotations

from common.domain.status import JobView, status_view
from common.domain.taxonomy import describe_resolution
from common.ports import JobReader
from common.usecases.lookup import existing_job


class JobStatus:
    def __init__(self, jobs: JobReader, detector: bool) -> None:
        self._jobs = jobs
        self._detector = detector  # whether the service has the object detector (what a class means depends)

    def __call__(self, job_id: str) -> JobView:
        job = existing_job(self._jobs, job_id)
        undone_at = self._jobs.undone_at(job.id)
        return status_view(job, self._jobs.counters(job.id)).with_extra(
            **describe_resolution(job.spec.classes, job.spec.match, self._detector, job.spec.taught),
            **({"undone_at": undone_at} if undone_at else {}))
