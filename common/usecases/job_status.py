"""Report a job: its counters and what its classes mean. A query: reads the job store, writes nothing."""
from __future__ import annotations

from typing import Any

from common.domain.errors import NotFound
from common.domain.jobs import check_job_id, status_view
from common.domain.taxonomy import describe_resolution
from common.ports import JobReader


class JobStatus:
    def __init__(self, jobs: JobReader) -> None:
        self._jobs = jobs

    def __call__(self, job_id: str) -> dict[str, Any]:
        check_job_id(job_id)
        job = self._jobs.get_job(job_id)
        if job is None:
            raise NotFound(f"Job {job_id} not found", field="id")
        view = status_view(job, self._jobs.counters(job_id))
        view.update(describe_resolution(job.spec.classes, job.spec.match))
        return view
