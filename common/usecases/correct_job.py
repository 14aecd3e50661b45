"""Correct a job: a photo marked "not <class>" loses the copy the job made there (only if it still holds what the
job wrote); a photo added to a class gets a copy there (never over another file). Each correction is kept, by the
photo's content, for that class word in that bucket: later jobs there learn from it."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from common.domain.corrections import Correction, parse_corrections
from common.domain.errors import Conflict, InvalidRequest, ObjectMissing, PermanentImageError, TransientError
from common.domain.jobs import JobRecord, target_name
from common.domain.results import ImageResult
from common.logs import get_logger
from common.ports import CopyManifest, Corrections, JobStore, ObjectStore, Removal
from common.usecases.undo_job import KEPT_BECAUSE
from common.usecases.lookup import existing_job

log = get_logger("corrections")


class CorrectJob:
    """Corrections act only on what the job owns, by compare-and-set on its manifest (common/ports.py
    CopyManifest): a copy a correction writes becomes the job's (undo removes it), a copy it takes away is released
    first and removed only by the one caller that released it. An undone job owns nothing: correcting it is a 409."""

    def __init__(self, objects: ObjectStore, jobs: CopyManifest, corrections: Corrections) -> None:
        self._objects = objects
        self._jobs = jobs
        self._corrections = corrections

    def __call__(self, job_id: str, body: object) -> dict[str, Any]:
        job = existing_job(self._jobs, job_id)
        undone_at = self._jobs.undone_at(job.id)
        if undone_at is not None:
            raise Conflict(f"job {job.id} was undone at {undone_at}: it has no copies left to correct; run the "
                           "classes again and correct that job", field="id", undone_at=undone_at)
        items = parse_corrections(body)
        results = []
        for position, item in enumerate(items):
            result = self._jobs.result(job.id, item.name)
            if result is None and not item.name.startswith(job.spec.source_prefix):  # as the page and export show it
                result = self._jobs.result(job.id, job.spec.source_prefix + item.name)
            if result is None or not result.content:
                raise InvalidRequest(f"corrections[{position}].name {item.name!r} is not a photo this job classified "
                                     f"(its name as the results page shows it, or under {job.spec.source_prefix!r})",
                                     field="corrections")
            items[position] = replace(item, name=result.name)
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
        """What the correction did."""
        outcome: dict[str, Any] = {"name": item.name, "class": item.class_name, "belongs": item.belongs}
        if job.spec.dry_run:
            outcome["copies"] = "none (a dry run)"
        elif item.belongs:
            outcome.update(self._add(job, item, result))
        else:
            outcome.update(self._take_away(job, item, self._jobs.result(job.id, item.name) or result))
        self._corrections.record_correction(job.spec.bucket, item.word, result.content, item.belongs)
        return outcome

    def _add(self, job: JobRecord, item: Correction, result: ImageResult) -> dict[str, Any]:
        spec = job.spec
        try:
            copied = self._objects.copy(spec.bucket, item.name, target_name(item.class_name, item.name,
                                                                            spec.source_prefix), result.content)
        except (ObjectMissing, PermanentImageError) as exc:
            return {"copy_failed": getattr(exc, "reason", None) or "the photo no longer exists"}
        try:
            claimed = self._jobs.claim_copy(job.id, item.name, copied.name, copied.written, copied.identity)
        except TransientError:
            if copied.written:  # the manifest could not take it: no copy outside it is left behind
                self._objects.remove(spec.bucket, copied.name, result.content, copied.identity)
            raise
        if claimed:
            return {"copy": copied.name}
        if copied.written:  # undone meanwhile: the copy this call just wrote is nobody's, so it goes
            self._objects.remove(spec.bucket, copied.name, result.content, copied.identity)
        return {"copy_failed": "the job was undone meanwhile"}

    def _take_away(self, job: JobRecord, item: Correction, result: ImageResult) -> dict[str, Any]:
        folder = f"{item.class_name}/".casefold()
        removed: list[str] = []
        kept: list[str] = []
        reasons: dict[str, str] = {}
        for name in result.copies:
            if not name.casefold().startswith(folder):
                continue
            if name not in result.written:
                kept.append(name)
                reasons[name] = "not this job's copy (the same photo was already there): kept"
            elif self._jobs.release_copy(job.id, item.name, name):
                identity = result.identities.get(name, "")
                gone = Removal(self._objects.remove(job.spec.bucket, name, result.content, identity))
                if gone in (Removal.REMOVED, Removal.MISSING):
                    removed.append(name)
                else:
                    kept.append(name)
                    reasons[name] = KEPT_BECAUSE[gone]
        return {"removed": removed, "kept": kept, **({"kept_because": reasons} if reasons else {})}


class KeptCorrections:
    """The corrections kept in a bucket (a folder), with a photo each names where a job saw one; and forgetting
    them (a class word's all, or one photo's)."""

    def __init__(self, corrections: Corrections, jobs: JobStore, bucket: str) -> None:
        self._corrections = corrections
        self._jobs = jobs
        self._bucket = bucket

    def _photos(self) -> dict[str, tuple[str, str]]:
        """content -> a name it had in a job (the latest job's) and that name as the results page shows it (under
        the job's source prefix)."""
        names: dict[str, tuple[str, str]] = {}
        for job_id in self._jobs.job_ids():
            job = self._jobs.get_job(job_id)
            prefix = job.spec.source_prefix if job is not None else ""
            for result in self._jobs.results(job_id):
                if result.content:
                    shown = result.name[len(prefix):] if prefix and result.name.startswith(prefix) else result.name
                    names[result.content] = (result.name, shown)
        return names

    def __call__(self) -> list[dict[str, Any]]:
        photos = self._photos()
        return [{"class": word, "belongs": belongs, "content": content, "photo": photos.get(content, ("", ""))[0],
                 "shown": photos.get(content, ("", ""))[1]}
                for word in self._corrections.corrected_words(self._bucket)
                for content, belongs in self._corrections.corrections(self._bucket, word).items()]

    def forget(self, word: str, photo: str | None = None) -> int:
        """How many were forgotten: all of the word's, or those of the photo (by its name as the results page shows
        it, its full name, or its content)."""
        kept = self._corrections.corrections(self._bucket, word.casefold())
        photos = self._photos()
        chosen = [c for c in kept if photo is None or photo == c or photo in photos.get(c, ())]
        return sum(self._corrections.forget_correction(self._bucket, word.casefold(), c) for c in chosen)
