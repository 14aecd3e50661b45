"""Correct a job: a photo marked "not <class>" loses the copy the job made there (only if it still holds what the
job wrote); a photo added to a class gets a copy there (never over another file). Each correction is kept, by the
photo's content, for that class word in that bucket: later jobs there learn from it."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from common.domain.corrections import Correction, parse_corrections
from common.domain.errors import InvalidRequest, ObjectMissing, PermanentImageError
from common.domain.jobs import JobRecord, target_name
from common.domain.results import ImageResult
from common.logs import get_logger
from common.ports import CorrectedCopies, Corrections, JobStore, ObjectStore, Removal
from common.usecases.lookup import existing_job

log = get_logger("corrections")


class CorrectJob:
    def __init__(self, objects: ObjectStore, jobs: CorrectedCopies, corrections: Corrections) -> None:
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
        latest = {result.name: result for result in results}  # a photo corrected twice: its second sees the first
        done = []
        for item in items:
            outcome, latest[item.name] = self._apply(job, item, latest[item.name])
            done.append(outcome)
        log.info("job corrected", extra={"job_id": job.id, "corrections": len(done)})
        return {"id": job.id, "corrections": done}

    def _apply(self, job: JobRecord, item: Correction, result: ImageResult) -> tuple[dict[str, Any], ImageResult]:
        """What the correction did, and the photo's result as it leaves it."""
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
                # The job's manifest has it: undo removes it with the rest (a copy already there is not the
                # job's unless this correction wrote it).
                result = self._recorded(job.id, result, _with(result.copies, copied.name),
                                        _with(result.written, copied.name) if copied.written else result.written)
            except (ObjectMissing, PermanentImageError) as exc:
                outcome["copy_failed"] = getattr(exc, "reason", None) or "the photo no longer exists"
        else:
            removed, kept = [], []
            for name in result.written:
                if name.casefold().startswith(folder):
                    gone = Removal(self._objects.remove(spec.bucket, name, result.content))
                    (removed if gone in (Removal.REMOVED, Removal.MISSING) else kept).append(name)
            outcome.update(removed=removed, kept=kept)
            if removed:
                result = self._recorded(job.id, result, tuple(c for c in result.copies if c not in removed),
                                        tuple(w for w in result.written if w not in removed))
        self._corrections.record_correction(spec.bucket, item.word, result.content, item.belongs)
        return outcome, result

    def _recorded(self, job_id: str, result: ImageResult, copies: tuple[str, ...],
                  written: tuple[str, ...]) -> ImageResult:
        self._jobs.record_copies(job_id, result.name, copies, written)
        return replace(result, copies=copies, written=written)


def _with(names: tuple[str, ...], name: str) -> tuple[str, ...]:
    return names if name in names else (*names, name)


class KeptCorrections:
    """The corrections kept in a bucket (a folder), with a photo each names where a job saw one; and forgetting
    them (a class word's all, or one photo's)."""

    def __init__(self, corrections: Corrections, jobs: JobStore, bucket: str) -> None:
        self._corrections = corrections
        self._jobs = jobs
        self._bucket = bucket

    def _photos(self) -> dict[str, str]:
        """content -> a name it had in a job (the latest job's first)."""
        names: dict[str, str] = {}
        for job_id in reversed(self._jobs.job_ids()):
            for result in self._jobs.results(job_id):
                if result.content:
                    names[result.content] = result.name
        return names

    def __call__(self) -> list[dict[str, Any]]:
        photos = self._photos()
        return [{"class": word, "belongs": belongs, "content": content, "photo": photos.get(content, "")}
                for word in self._corrections.corrected_words(self._bucket)
                for content, belongs in self._corrections.corrections(self._bucket, word).items()]

    def forget(self, word: str, photo: str | None = None) -> int:
        """How many were forgotten: all of the word's, or those of the photo (by name or content)."""
        kept = self._corrections.corrections(self._bucket, word.casefold())
        photos = self._photos()
        chosen = [c for c in kept if photo is None or photo in (c, photos.get(c))]
        return sum(self._corrections.forget_correction(self._bucket, word.casefold(), c) for c in chosen)
