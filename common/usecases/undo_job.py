"""Undo a job: remove exactly the copies it wrote, and only where the file is still what it wrote (content
check), never through a link. Anything else — a copy the user changed, replaced or already removed, a class folder
turned into a link — is reported, never deleted."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from common.domain.errors import Conflict
from common.domain.status import status_view
from common.logs import get_logger
from common.ports import CopyManifest, ObjectStore, Removal
from common.usecases.lookup import existing_job

log = get_logger("undo_job")

KEPT_BECAUSE = {Removal.CHANGED: "changed or replaced since the job wrote it: kept",
                Removal.UNSAFE: "a folder on its path is now a symbolic link or not a folder: nothing removed "
                                "through it"}


class UndoJob:
    """Ownership is state: the job is marked undone first (it takes no new copy from then on), then each copy it
    still owns is released — one compare-and-set — and only the caller that released it removes the file. A
    second undo (or one racing a correction) finds nothing owned and removes nothing, whatever now lies at a path
    the job once wrote; an undo interrupted half way finishes when run again."""

    def __init__(self, objects: ObjectStore, jobs: CopyManifest, clock: Callable[[], str]) -> None:
        self._objects = objects
        self._jobs = jobs
        self._clock = clock

    def __call__(self, job_id: str) -> dict[str, Any]:
        job = existing_job(self._jobs, job_id)
        state = status_view(job, self._jobs.counters(job.id)).state
        if state.in_progress:
            advice = "close it first (Ctrl-C its watch, or POST …/close)" if job.spec.watch and not job.closed else \
                "undo it once it is complete"
            raise Conflict(f"job {job_id} is still {state}: {advice}", field="id", state=str(state))
        first = self._jobs.record_undo(job.id, self._clock())
        removed, missing, kept = 0, 0, []
        for result in self._jobs.results(job.id):
            for name in result.written:
                if not self._jobs.release_copy(job.id, result.name, name):
                    continue  # released already (an earlier undo, a correction): not this call's to remove
                outcome = Removal(self._objects.remove(job.spec.bucket, name, result.content,
                                                       result.identities.get(name, "")))
                if outcome == Removal.REMOVED:
                    removed += 1
                elif outcome == Removal.MISSING:
                    missing += 1
                else:
                    kept.append({"name": name, "reason": KEPT_BECAUSE[outcome]})
        log.info("job undone", extra={"job_id": job.id, "removed": removed, "missing": missing, "kept": len(kept)})
        answer: dict[str, Any] = {"id": job.id, "removed": removed, "missing": missing, "kept": kept,
                                  "undone_at": self._jobs.undone_at(job.id)}
        if not first:
            answer["already_undone"] = True  # it owned nothing more: nothing a path it once wrote holds is touched
        return answer
