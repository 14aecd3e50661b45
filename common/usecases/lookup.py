"""Finding the job a request names: shared by every use case that acts on one job."""
from __future__ import annotations

from common.domain.errors import NotFound
from common.domain.jobs import JobRecord, check_job_id
from common.ports import JobReader


def existing_job(jobs: JobReader, job_id: str) -> JobRecord:
    """The job, or NotFound; a malformed id is refused before any lookup."""
    check_job_id(job_id)
    job = jobs.get_job(job_id)
    if job is None:
        raise NotFound(f"Job {job_id} not found", field="id")
    return job
