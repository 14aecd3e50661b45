"""Report a job: its counters and what its classes mean. A query: reads the job store, writes nothing."""
from __future__ import annotations

from typing import Any

from common.domain.jobs import status_view
from common.domain.taxonomy import describe_resolution
from common.ports import JobReader
from common.usecases.lookup import existing_job

class JobStatus:
    def __init__(self, jobs: JobReader) -> None:
        self._jobs = jobs

    def __call__(self, job_id: str) -> dict[str, Any]:
        job = existing_job(self._jobs, job_id)
        view = status_view(job, self._jobs.counters(job_id))
        view.update(describe_resolution(job.spec.classes, job.spec.match))
        return view
