"""Finding the job a request names: shared by every use case that acts on one job."""
from __future__ import annotations

from common.domain.errors import Conflict, NotFound
from common.domain.jobs import JobRecord, is_job_id, is_job_id_prefix
from common.ports import JobReader

MAX_ECHOED_ID = 80  # an id is echoed in the answer as the old service did, but not a megabyte of one


def existing_job(jobs: JobReader, job_id: str) -> JobRecord:
    """The job a full id, or a unique prefix of 4 or more characters, names; NotFound — "Job <id> not found", as
    the old service answered, whatever the id's shape — otherwise, and a Conflict when a prefix names several."""
    job = None
    if is_job_id(job_id):
        job = jobs.get_job(job_id)
    elif is_job_id_prefix(job_id):
        found = jobs.job_ids_with_prefix(job_id, limit=2)
        if len(found) > 1:
            raise Conflict(f"job id {job_id} names several jobs ({', '.join(found)}, …): give more of it",
                           field="id", candidates=found)
        job = jobs.get_job(found[0]) if found else None
    if job is None:
        shown = job_id if isinstance(job_id, str) and len(job_id) <= MAX_ECHOED_ID else \
            f"{str(job_id)[:MAX_ECHOED_ID]}…"
        raise NotFound(f"Job {shown} not found", field="id")
    return job
