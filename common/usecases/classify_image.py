"""Classify one image of a job: decode it, run the model, copy it into each matching class, record the result.

The retry policy, decided here once for every backend: a `TransientError` (or `ConfigurationError`, which an
operator fixes) propagates, so the message is redelivered; anything else is this image's permanent failure,
recorded with its reason and acked. A bug therefore fails the images it touches instead of redelivering forever.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from common.domain.errors import ConfigurationError, ObjectMissing, PermanentImageError, TransientError
from common.domain.jobs import target_name
from common.domain.matching import match_classes
from common.domain.messages import ClassifyMessage
from common.domain.results import ImageResult
from common.inference.classifier import Classifier
from common.logs import get_logger
from common.ports import ObjectStore, ResultRecorder

log = get_logger("classify_image")

Decoder = Callable[[bytes], np.ndarray]


class ClassifyImage:
    def __init__(self, objects: ObjectStore, results: ResultRecorder, classifier: Callable[[], Classifier],
                 decode: Decoder) -> None:
        self._objects = objects
        self._results = results
        self._classifier = classifier
        self._decode = decode

    def load_model(self) -> Classifier:
        return self._classifier()

    def __call__(self, message: ClassifyMessage) -> ImageResult | None:
        """The recorded result, or None when this image was already counted (a redelivery)."""
        context = {"job_id": message.job_id, "object": message.name}
        if self._results.has_result(message.job_id, message.name):
            log.info("duplicate delivery ignored", extra=context)
            return None
        try:
            result = self._classify_and_copy(message)
        except TransientError:
            raise
        except ConfigurationError as exc:
            # The instance cannot classify anything (no weights, no permission): say so where the operator and
            # the job's owner look — a structured error entry and the job's status — then redeliver, so the
            # images go through once it is fixed.
            log.error("instance cannot classify", extra={**context, "error": str(exc)})
            self._results.record_job_error(message.job_id, f"classify_image: {exc}")
            raise
        except Exception as exc:
            log.exception("image failed on an unexpected error; recorded as failed, not retried", extra=context)
            result = ImageResult.failure(message.name, f"internal error: {type(exc).__name__}: {exc}")
        if not self._results.record_result(message.job_id, result):
            log.info("duplicate delivery ignored after classification", extra=context)
            return None
        if result.ok:
            log.info("image classified", extra={**context, "matched": list(result.matched), "copies": len(
                result.copies), "top_label": result.labels[0].name if result.labels else None})
        else:
            log.warning("image failed", extra={**context, "reason": result.reason})
        return result

    def _classify_and_copy(self, message: ClassifyMessage) -> ImageResult:
        spec = message.spec
        try:
            pixels = self._decode(self._objects.read(spec.bucket, message.name))
        except ObjectMissing:
            return ImageResult.failure(message.name, "object no longer exists")
        except PermanentImageError as exc:
            return ImageResult.failure(message.name, exc.reason)
        probabilities = self._classifier().predict(pixels[None])[0]
        outcome = match_classes(spec, probabilities)
        copies = []
        for class_name in outcome.matched:
            target = target_name(class_name, message.name, spec.source_prefix)
            try:
                copied = self._objects.copy(spec.bucket, message.name, target)
            except ObjectMissing:
                reason = "object deleted while being classified"
            except PermanentImageError as exc:
                reason = exc.reason
            else:
                copies.append(copied.name)
                continue
            return ImageResult(message.name, ok=False, reason=reason, copies=tuple(copies))
        return ImageResult(message.name, ok=True, matched=outcome.matched, labels=outcome.labels,
                           scores=outcome.scores, copies=tuple(copies))
