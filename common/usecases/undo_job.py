"""Undo a job: remove exactly the copies it wrote, and only where the file is still what it wrote (content
check). Anything else — a copy the user changed, replaced or already removed — is reported, never deleted."""
from __future__ import annotations

from typing import Any

from common.domain.errors import Conflict
from common.domain.jobs import status_view
from common.logs import get_logger
from common.usecases.lookup import existing_job
from common.ports import JobWriter, ObjectStore

log = get_logger("undo_job")


class UndoJob:
    def __init__(self, objects: ObjectStore, jobs: JobWriter) -> None:
        self._objects = objects
        self._jobs = jobs

    def __call__(self, job_id: str) -> dict[str, Any]:
        job = existing_job(self._jobs, job_id)
        if status_view(job, self._jobs.counters(job_id))["state"] in ("listing", "running"):
            raise Conflict(f"job {job_id} is still running: undo it once it is complete", field="id")
        removed, missing, kept = 0, 0, []
        for result in self._jobs.results(job_id):
            for name in result.written:
                outcome = self._objects.remove(job.spec.bucket, name, result.content)
                if outcome == "removed":
                    removed += 1
                elif outcome == "missing":
                    missing += 1
                else:
                    kept.append({"name": name, "reason": "changed since the job wrote it: kept"})
        log.info("job undone", extra={"job_id": job_id, "removed": removed, "missing": missing, "kept": len(kept)})
        return {"id": job_id, "removed": removed, "missing": missing, "kept": kept}
