"""Correct a job: a photo marked "not <class>" loses the copy the job made there (only if it still holds what the
job wrote); a photo added to a class gets a copy there (never over another file). Each correction is kept, by the
photo's content, for that class word in that bucket: later jobs there learn from it."""
from __future__ import annotations

from typing import Any

from common.domain.corrections import Correction, parse_corrections
from common.domain.errors import InvalidRequest, ObjectMissing, PermanentImageError
from common.domain.jobs import JobRecord, target_name
from common.domain.results import ImageResult
from common.logs import get_logger
from common.ports import Corrections, JobReader, ObjectStore, Removal
from common.usecases.lookup import existing_job

log = get_logger("corrections")


class CorrectJob:
    def __init__(self, objects: ObjectStore, jobs: JobReader, corrections: Corrections) -> None:
        self._objects = objects
        self._jobs = jobs
        self._corrections = corrections

    def __call__(self, job_id: str, body: object) -> dict[str, Any]:
        job = existing_job(self._jobs, job_id)
        items = parse_corrections(body)
        results = []
        for position, item in enumerate(items):
            result = self._jobs.result(job.id, item.name)
            if result is None or not result.content:
                raise InvalidRequest(f"corrections[{position}].name {item.name!r} is not a photo this job classified",
                                     field="corrections")
            folder = f"{item.class_name}/".casefold()
            prefix = job.spec.source_prefix.casefold()
            if folder.startswith(prefix) or prefix.startswith(folder):
                raise InvalidRequest(f"corrections[{position}].class {item.class_name!r} would put copies inside "
                                     f"source_prefix {job.spec.source_prefix!r}", field="corrections")
            results.append(result)
        done = [self._apply(job, item, result) for item, result in zip(items, results)]
        log.info("job corrected", extra={"job_id": job.id, "corrections": len(done)})
        return {"id": job.id, "corrections": done}

    def _apply(self, job: JobRecord, item: Correction, result: ImageResult) -> dict[str, Any]:
        spec = job.spec
        outcome: dict[str, Any] = {"name": item.name, "class": item.class_name, "belongs": item.belongs}
        folder = f"{item.class_name}/".casefold()
        if spec.dry_run:
            outcome["copies"] = "none (a dry run)"
        elif item.belongs:
            try:
                copied = self._objects.copy(spec.bucket, item.name, target_name(item.class_name, item.name,
                                                                                spec.source_prefix), result.content)
                outcome["copy"] = copied.name
            except (ObjectMissing, PermanentImageError) as exc:
                outcome["copy_failed"] = getattr(exc, "reason", None) or "the photo no longer exists"
        else:
            removed, kept = [], []
            for name in result.written:
                if name.casefold().startswith(folder):
                    gone = Removal(self._objects.remove(spec.bucket, name, result.content))
                    (removed if gone in (Removal.REMOVED, Removal.MISSING) else kept).append(name)
            outcome.update(removed=removed, kept=kept)
        self._corrections.record_correction(spec.bucket, item.word, result.content, item.belongs)
        return outcome
