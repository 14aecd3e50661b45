"""Classify one image of a job: decode it, run the model, copy it into each matching class, record the result.

The retry policy, decided here once for every backend: a `TransientError` (or `ConfigurationError`, which an
operator fixes) propagates, so the message is redelivered; anything else is this image's permanent failure,
recorded with its reason and acked. A bug therefore fails the images it touches instead of redelivering forever.
"""
from __future__ import annotations

import threading
from typing import Protocol
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from dataclasses import replace

from common.domain.errors import (ConfigurationError, ObjectMissing, PermanentImageError, TransientError,
                                  TruncatedImage)
from common.domain.corrections import corrected_matches
from common.domain.jobs import JobRecord, is_plain_object_name, target_name
from common.domain.matching import MatchOutcome, match_classes, match_many
from common.domain.messages import ClassifyMessage
from common.domain.options import MatchMode
from common.domain.taxonomy import needs_detector
from common.domain.results import ImageResult, PredictionSource
from common.logs import get_logger
from common.ports import (Classifier, Corrections, CopyManifest, Detector, ObjectStore, PredictionStore,
                          ResultRecorder)
from common.usecases.learn_examples import LearnExamples, Taught
from common.usecases.photo_vectors import Decoder, PhotoVectors, StageTimer, Vectors

log = get_logger("classify_image")
KEPT_SPECS = 256  # jobs whose recorded settings an instance keeps (a spec never changes)


class ClassifyRecords(ResultRecorder, CopyManifest, Protocol):
    """The job store as classify_image uses it: the job's record, its results, its copies' manifest."""


class ClassifyImage:
    def __init__(self, objects: ObjectStore, jobs: ClassifyRecords, classifier: Callable[[], Classifier],
                 decode: Decoder, predictions: PredictionStore, model_key: str | None, corrections: Corrections, *,
                 announce: Callable[[str], bool] | None, retry_truncated: bool,
                 detector: Callable[[], Detector] | None, detector_key: str | None) -> None:
        """model_key None: predictions are not stored (random weights); announce None: the store announces
        completions itself (ResultRecorder.on_counted); detector None: no object detector configured."""
        self._objects = objects
        # On a disk a file may be read while it is still being written: a truncated read there may pass (the
        # queue retries it, with backoff, a bounded number of times). A bucket's objects appear whole.
        self._retry_truncated = retry_truncated
        # The classifier's and the object detector's answers (the detector for jobs whose classes it adds to
        # ImageNet: people, horses), each stored under its own fingerprint.
        self.vectors = PhotoVectors(objects, classifier, decode, predictions, model_key, detector, detector_key)
        self._announce = announce  # called after each recorded image: whoever records the last one announces
        # The job's record decides what a message may do (prefix, classes, thresholds), never the message: a
        # forged or stale delivery cannot copy other objects or count into another job. Kept per instance.
        self._jobs = jobs
        self._specs: OrderedDict[str, JobRecord] = OrderedDict()
        self._specs_lock = threading.Lock()
        self._classifier = classifier
        # What a job's example photos teach, learned from the same store and model once per job and instance.
        # What people said of photos (corrections) refines every later job in their bucket.
        self._examples = LearnExamples(objects, self.vectors, corrections)

    def load_model(self) -> Classifier:
        return self._classifier()

    def _recorded_job(self, job_id: str) -> JobRecord | None:
        """The job's record as created (its spec and message key never change), kept per instance."""
        with self._specs_lock:
            if job_id in self._specs:
                self._specs.move_to_end(job_id)
                return self._specs[job_id]
        job = self._jobs.get_job(job_id)
        if job is None:
            return None
        with self._specs_lock:
            self._specs[job_id] = job
            while len(self._specs) > KEPT_SPECS:
                self._specs.popitem(last=False)
        return job

    def _trusted(self, message: ClassifyMessage) -> ClassifyMessage | None:
        """The message with its job's recorded settings, or None (logged) when no job would have sent it."""
        job = self._recorded_job(message.job_id)
        refusal = None
        if job is None:
            refusal = "no such job"
        elif not message.name.startswith(job.spec.source_prefix) or not is_plain_object_name(message.name):
            refusal = f"the object is not under the job's prefix {job.spec.source_prefix!r}"
        elif not message.signed_by(job):
            refusal = "not signed with the job's key: the job did not publish it"
        if refusal is not None or job is None:
            log.warning("message refused, not counted", extra={"job_id": message.job_id, "object": message.name,
                                                                "reason": refusal})
            return None
        return message if message.spec == job.spec else replace(message, spec=job.spec)

    def __call__(self, message: ClassifyMessage) -> ImageResult | None:
        """The recorded result, or None when this image was already counted (a redelivery) or the message was
        refused (no job sent it)."""
        trusted = self._trusted(message)
        if trusted is None:
            return None
        try:
            return self._handle(trusted, None)
        finally:
            # Announce even after a duplicate: if the announcement failed (a transient error, so this message was
            # redelivered), the redelivery is what makes it happen; the completion marker keeps it to once.
            if self._announce is not None:
                self._announce(trusted.job_id)

    def deliver_batch(self, messages: Sequence[ClassifyMessage]) -> list[ClassifyMessage]:
        """Messages delivered together (the embedded queue): the stored answers for all their photos read in one
        query and each job announced once, instead of per photo. Each message is otherwise handled as alone; those
        that raised are returned, to be delivered again one by one with their retries."""
        trusted = [checked for message in messages if (checked := self._trusted(message)) is not None]
        timings = StageTimer()
        known = self.vectors.known([m.content for m in trusted if m.content], False, timings)
        decided = self._decided(trusted, known, timings)
        unfinished, answered = [], 0
        for message in trusted:
            try:
                result = self._handle(message, known.get(message.content or ""),
                                      decided.get((message.job_id, message.name)), log_stored=False)
            except Exception:  # TransientError, ConfigurationError: the one-by-one delivery decides
                unfinished.append(message)
                continue
            answered += result is not None and result.ok and result.prediction == PredictionSource.STORE
        for job_id in dict.fromkeys(message.job_id for message in trusted):
            if self._announce is not None:
                self._announce(job_id)
        if answered:  # one entry for a delivery's stored answers: a library's second question logs little
            log.info("images answered from stored predictions", extra={
                "job_id": trusted[0].job_id, "images": answered, "timings_ms": timings.milliseconds})
        return unfinished

    @staticmethod
    def _decided(messages: Sequence[ClassifyMessage], known: Mapping[str, Vectors],
                 timings: StageTimer) -> dict[tuple[str, str], MatchOutcome]:
        """The stored answers of a delivery's photos matched together, one matrix per job, where the classifier
        alone decides (no detector, no class taught by examples or corrections): match_many, the same rules."""
        by_job: dict[str, list[ClassifyMessage]] = {}
        for message in messages:
            if message.content in known:
                by_job.setdefault(message.job_id, []).append(message)
        decided: dict[tuple[str, str], MatchOutcome] = {}
        with timings.stage("match"):
            for group in by_job.values():
                spec = group[0].spec
                if spec.examples or needs_detector(spec.classes, spec.match):
                    continue
                matrix = np.stack([known[m.content or ""].probabilities for m in group])
                decided.update(((m.job_id, m.name), outcome) for m, outcome in zip(group, match_many(spec, matrix)))
        return decided

    def _handle(self, message: ClassifyMessage, known: Vectors | None, decided: MatchOutcome | None = None,
                log_stored: bool = True) -> ImageResult | None:
        context = {"job_id": message.job_id, "object": message.name}
        # No "already done?" read first: deliveries are almost always first deliveries, a redelivery finds its
        # prediction stored and its copies in place, and recording the result once decides what counts.
        timings = StageTimer()
        try:
            result = self._classify_and_copy(message, timings, known, decided)
        except TransientError:
            raise
        except ConfigurationError as exc:
            # The instance cannot classify anything (no weights, no permission): say so where the operator and
            # the job's owner look — a structured error entry and the job's status — then redeliver, so the
            # images go through once it is fixed.
            log.error("instance cannot classify", extra={**context, "error": str(exc)})
            self._jobs.record_job_error(message.job_id, f"classify_image: {exc}")
            raise
        except Exception as exc:
            log.exception("image failed on an unexpected error; recorded as failed, not retried", extra=context)
            result = ImageResult.failure(message.name, f"internal error: {type(exc).__name__}: {exc}")
        with timings.stage("record"):
            recorded = self._jobs.record_result(message.job_id, result)
        if not recorded:
            log.info("duplicate delivery: already counted", extra=context)
            self._settle_duplicate(message, result)
            return None
        if result.ok and (log_stored or result.prediction != PredictionSource.STORE):  # else: one entry a batch
            # Where the time went, per stage: what an operator (and bench/pipeline.py) reads to find the cost.
            log.info("image classified", extra={**context, "matched": list(result.matched), "copies": len(
                result.copies), "top_label": result.labels[0].name if result.labels else None,
                "timings_ms": timings.milliseconds})
        elif not result.ok:
            log.warning("image failed", extra={**context, "reason": result.reason})
        return result

    def _settle_duplicate(self, message: ClassifyMessage, mine: ImageResult) -> None:
        """A redelivery may have written copies the recorded result does not have: a correction or an undo took
        them away since (final for that image and class), or a concurrent delivery recorded first. A copy the job's
        manifest does not list as the photo's goes again (this delivery made it moments ago); one it lists but does
        not own becomes the job's, since this delivery wrote it."""
        if not mine.written:
            return
        recorded = self._jobs.result(message.job_id, message.name)
        for name in mine.written:
            if recorded is not None and name in recorded.written:
                continue
            if recorded is not None and name in recorded.copies and \
                    self._jobs.claim_copy(message.job_id, message.name, name, True, mine.identities.get(name, "")):
                continue
            self._objects.remove(message.spec.bucket, name, mine.content, mine.identities.get(name, ""))
            log.info("copy from a redelivery removed: the job's manifest does not have it",
                     extra={"job_id": message.job_id, "object": message.name, "copy": name})

    def _classify_and_copy(self, message: ClassifyMessage, timings: StageTimer, known: Vectors | None,
                           decided: MatchOutcome | None) -> ImageResult:
        spec = message.spec
        try:
            taught = self._examples(message.job_id, spec) if spec.match == MatchMode.HIERARCHY else Taught(None)
            vectors = self.vectors.classifier(spec.bucket, message.name, message.content, timings,
                                              features=taught.model is not None, known=known)
            content = vectors.content
            detections = self.vectors.detections(spec.bucket, message.name, content, vectors.data, timings,
                                                 vectors.probabilities, vectors.pixels) if \
                needs_detector(spec.classes, spec.match) else None
        except ObjectMissing:
            return ImageResult.failure(message.name, "object no longer exists")
        except TruncatedImage as exc:
            if self._retry_truncated:
                raise TransientError(f"{exc.reason} (still being written?)") from None
            return ImageResult.failure(message.name, exc.reason)
        except PermanentImageError as exc:
            return ImageResult.failure(message.name, exc.reason)
        with timings.stage("match"):
            # Decided with its delivery's other photos when they were matched together from these very vectors.
            outcome = decided if decided is not None and vectors is known and taught.model is None and \
                detections is None else match_classes(spec, vectors.probabilities, detections, taught.model,
                                                      vectors.features)
            matched = corrected_matches(spec.classes, outcome.matched, content, taught.said)
        copies: list[str] = []
        written: list[str] = []
        identities: dict[str, str] = {}
        for class_name in () if spec.dry_run else matched:
            target = target_name(class_name, message.name, spec.source_prefix)
            try:
                with timings.stage("copy"):
                    copied = self._objects.copy(spec.bucket, message.name, target, content)
            except ObjectMissing:
                reason = "object deleted while being classified"
            except PermanentImageError as exc:
                reason = exc.reason
            else:
                copies.append(copied.name)
                if copied.written:
                    written.append(copied.name)
                    identities[copied.name] = copied.identity
                continue
            return ImageResult(message.name, ok=False, reason=reason, copies=tuple(copies), written=tuple(written),
                               content=content, prediction=vectors.source, identities=identities)
        return ImageResult(message.name, ok=True, matched=matched, labels=outcome.labels,
                           scores=outcome.scores, copies=tuple(copies), written=tuple(written), content=content,
                           prediction=vectors.source,
                           detections={c: d.to_dict() for c, d in outcome.detections.items()},
                           similarities=outcome.similarities, identities=identities,
                           corrected=tuple(c for c in spec.classes if (c in matched) != (c in outcome.matched)))
