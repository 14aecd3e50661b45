"""Classify one image of a job: decode it, run the model, copy it into each matching class, record the result.

The retry policy, decided here once for every backend: a `TransientError` (or `ConfigurationError`, which an
operator fixes) propagates, so the message is redelivered; anything else is this image's permanent failure,
recorded with its reason and acked. A bug therefore fails the images it touches instead of redelivering forever.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

import numpy as np

from common.domain.errors import (ConfigurationError, ObjectMissing, PermanentImageError, ServiceError,
                                  TransientError, TruncatedImage)
from common.domain.jobs import target_name
from common.domain.matching import match_classes
from common.domain.messages import ClassifyMessage
from common.domain.detections import DETECTION_WIDTH, NUM_DETECTOR_CLASSES
from common.domain.predictions import (NUM_CLASSES, CorruptPrediction, content_fingerprint, decode_vector,
                                       encode_probabilities)
from common.domain.taxonomy import needs_detector
from common.domain.results import ImageResult, PredictionSource
from common.logs import get_logger
from common.ports import Classifier, Detector, ObjectStore, PredictionStore, ResultRecorder

log = get_logger("classify_image")

Decoder = Callable[..., np.ndarray]  # (bytes, size=224) -> uint8 (size, size, 3)
DETECTOR_INPUT = 416


class StageTimer:
    """Wall time per named stage of one delivery (stages that repeat, like copies, add up)."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[name] = self._seconds.get(name, 0.0) + time.perf_counter() - started

    @property
    def milliseconds(self) -> dict[str, float]:
        return {name: round(seconds * 1000, 2) for name, seconds in self._seconds.items()}


class ClassifyImage:
    def __init__(self, objects: ObjectStore, results: ResultRecorder, classifier: Callable[[], Classifier],
                 decode: Decoder, predictions: PredictionStore | None = None, model_key: str | None = None,
                 announce: Callable[[str], bool] | None = None, retry_truncated: bool = False,
                 detector: Callable[[], Detector] | None = None, detector_key: str | None = None) -> None:
        self._objects = objects
        # On a disk a file may be read while it is still being written: a truncated read there may pass (the
        # queue retries it, with backoff, a bounded number of times). A bucket's objects appear whole.
        self._retry_truncated = retry_truncated
        # The object detector, for jobs whose classes it adds to ImageNet (people, horses); its answers are stored
        # under its own fingerprint, like the classifier's.
        self._detector = detector
        self._detector_key = detector_key or ""
        self._announce = announce  # called after each recorded image: whoever records the last one announces
        self._results = results
        self._classifier = classifier
        self._decode = decode
        # Stored predictions, by the model build's fingerprint: without both, every image goes to the model.
        self._predictions = predictions if model_key else None
        self._model_key = model_key or ""

    def load_model(self) -> Classifier:
        return self._classifier()

    def __call__(self, message: ClassifyMessage) -> ImageResult | None:
        """The recorded result, or None when this image was already counted (a redelivery)."""
        context = {"job_id": message.job_id, "object": message.name}
        # No "already done?" read first: deliveries are almost always first deliveries, a redelivery finds its
        # prediction stored and its copies in place, and recording the result once decides what counts.
        timings = StageTimer()
        try:
            result = self._classify_and_copy(message, timings)
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
        with timings.stage("record"):
            recorded = self._results.record_result(message.job_id, result)
        # Announce even after a duplicate: if the announcement failed (a transient error, so this message was
        # redelivered), the redelivery is what makes it happen; the completion marker keeps it to once.
        if self._announce is not None:
            self._announce(message.job_id)
        if not recorded:
            log.info("duplicate delivery: already counted", extra=context)
            return None
        if result.ok:
            # Where the time went, per stage: what an operator (and bench/pipeline.py) reads to find the cost.
            log.info("image classified", extra={**context, "matched": list(result.matched), "copies": len(
                result.copies), "top_label": result.labels[0].name if result.labels else None,
                "timings_ms": timings.milliseconds})
        else:
            log.warning("image failed", extra={**context, "reason": result.reason})
        return result

    def _stored(self, content: str, key: str | None = None, size: int = NUM_CLASSES
                ) -> tuple[np.ndarray | None, bool]:
        """(the stored vector — the classifier's probabilities, or under another key the detector's answer —,
        whether a stored entry was unreadable). A store that fails is a miss, never an error."""
        key = self._model_key if key is None else key
        if self._predictions is None or not key:
            return None, False
        try:
            blob = self._predictions.get(key, content)
        except ServiceError as exc:
            log.warning("prediction store unavailable; using the model", extra={"error": str(exc)})
            return None, False
        if blob is None:
            return None, False
        try:
            return decode_vector(blob, size), False
        except CorruptPrediction as exc:
            log.warning("stored prediction ignored", extra={"content": content, "error": str(exc)})
            return None, True

    def _store(self, content: str, vector: np.ndarray, key: str | None = None) -> None:
        key = self._model_key if key is None else key
        if self._predictions is None or not key:
            return
        try:
            self._predictions.put(key, content, encode_probabilities(vector))
        except ServiceError as exc:
            log.warning("prediction not stored", extra={"content": content, "error": str(exc)})

    def _probabilities(self, message: ClassifyMessage, timings: StageTimer
                       ) -> tuple[np.ndarray, str, str, bytes | None]:
        """(probabilities, where they came from, the photo's content fingerprint, its bytes when they were read).
        A stored prediction keyed by the listing's fingerprint needs no download at all; otherwise the bytes are
        read, fingerprinted, looked up, and only a miss reaches the decoder and the model."""
        corrupt = False
        if message.content:
            with timings.stage("lookup"):
                probabilities, corrupt = self._stored(message.content)
            if probabilities is not None:
                return probabilities, PredictionSource.STORE, message.content, None
        with timings.stage("download"):
            data = self._objects.read(message.spec.bucket, message.name)
        content = content_fingerprint(data)
        if content != message.content:  # no fingerprint in the message, or the object changed since listing
            with timings.stage("lookup"):
                probabilities, bad = self._stored(content)
            corrupt = corrupt or bad
            if probabilities is not None:
                return probabilities, PredictionSource.STORE, content, data
        with timings.stage("decode"):
            pixels = self._decode(data)
        with timings.stage("model"):
            probabilities = self._classifier().predict(pixels[None])[0]
        self._store(content, probabilities)
        return probabilities, PredictionSource.RECOMPUTED if corrupt else PredictionSource.MODEL, content, data

    def _detections(self, message: ClassifyMessage, content: str, data: bytes | None,
                    timings: StageTimer) -> np.ndarray | None:
        """The detector's answer for the photo: stored, or computed (reading the photo if it was not read)."""
        if self._detector is None:
            return None
        stored, _ = self._stored(content, self._detector_key, NUM_DETECTOR_CLASSES * DETECTION_WIDTH)
        if stored is not None:
            return stored
        if data is None:
            with timings.stage("download"):
                data = self._objects.read(message.spec.bucket, message.name)
        with timings.stage("decode"):
            pixels = self._decode(data, DETECTOR_INPUT)
        with timings.stage("detector"):
            detections = self._detector().detect(pixels)
        self._store(content, detections, self._detector_key)
        return detections

    def _classify_and_copy(self, message: ClassifyMessage, timings: StageTimer) -> ImageResult:
        spec = message.spec
        try:
            probabilities, prediction, content, data = self._probabilities(message, timings)
            detections = self._detections(message, content, data, timings) if \
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
            outcome = match_classes(spec, probabilities, detections)
        copies: list[str] = []
        written: list[str] = []
        for class_name in () if spec.dry_run else outcome.matched:
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
                continue
            return ImageResult(message.name, ok=False, reason=reason, copies=tuple(copies), written=tuple(written),
                               content=content, prediction=prediction)
        return ImageResult(message.name, ok=True, matched=outcome.matched, labels=outcome.labels,
                           scores=outcome.scores, copies=tuple(copies), written=tuple(written), content=content,
                           prediction=prediction,
                           detections={c: d.to_dict() for c, d in outcome.detections.items()})
