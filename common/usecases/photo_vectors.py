"""What the models say about one photo — the classifier's probabilities and features, the detector's answer —
from the prediction store when it has them, else from the model (and then stored). Shared by classifying a
photo and by learning a job's example photos."""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from common.domain.detections import DETECTION_WIDTH, NUM_DETECTOR_CLASSES
from common.domain.errors import ServiceError
from common.domain.people import escalate
from common.domain.predictions import NUM_CLASSES, CorruptPrediction, content_fingerprint, decode_stored, \
    encode_probabilities
from common.domain.results import PredictionSource
from common.logs import get_logger
from common.ports import Classifier, Detector, ObjectReader, PredictionStore

log = get_logger("classify_image")

Decoder = Callable[..., np.ndarray]  # (bytes, size=224) -> uint8 (size, size, 3)
DETECTOR_INPUT = 416


class _Stage:
    """One timed stage: a plain context manager (a generator-based one costs several µs a use, per photo)."""

    __slots__ = ("_name", "_seconds", "_started")

    def __init__(self, seconds: dict[str, float], name: str) -> None:
        self._seconds, self._name, self._started = seconds, name, 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._seconds[self._name] = self._seconds.get(self._name, 0.0) + time.perf_counter() - self._started


class StageTimer:
    """Wall time per named stage of one delivery (stages that repeat, like copies, add up)."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    def stage(self, name: str) -> _Stage:
        return _Stage(self._seconds, name)

    @property
    def milliseconds(self) -> dict[str, float]:
        return {name: round(seconds * 1000, 2) for name, seconds in self._seconds.items()}


@dataclass(frozen=True)
class Vectors:
    probabilities: np.ndarray
    features: np.ndarray | None  # None when the entry was stored without them and they were not asked for
    source: str  # a PredictionSource
    content: str  # the photo's content fingerprint
    data: bytes | None  # the photo's bytes, when they were read
    pixels: np.ndarray | None = None  # what the classifier saw (the photo decoded at its size), when it ran


class PhotoVectors:
    def __init__(self, objects: ObjectReader, classifier: Callable[[], Classifier], decode: Decoder,
                 predictions: PredictionStore, model_key: str | None, detector: Callable[[], Detector] | None,
                 detector_key: str | None) -> None:
        """model_key None: predictions are not stored (random weights differ on every load); detector None: no
        object detector is configured (detector_key: its build's fingerprint, the store's key for its answers)."""
        self._objects = objects
        self._classifier = classifier
        self._decode = decode
        # Stored predictions, by the model build's fingerprint: without both, every image goes to the model.
        self._predictions = predictions if model_key else None
        self._model_key = model_key or ""
        self._detector = detector
        self._detector_key = detector_key or ""

    @property
    def has_detector(self) -> bool:
        return self._detector is not None

    def _stored(self, content: str, key: str, size: int) -> tuple[tuple[np.ndarray, np.ndarray | None] | None, bool]:
        """(the stored vector and the features beside it, whether a stored entry was unreadable). A store that
        fails is a miss, never an error."""
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
            return decode_stored(blob, size), False
        except CorruptPrediction as exc:
            log.warning("stored prediction ignored", extra={"content": content, "error": str(exc)})
            return None, True

    def _store(self, content: str, key: str, vector: np.ndarray, features: np.ndarray | None = None) -> None:
        if self._predictions is None or not key:
            return
        try:
            self._predictions.put(key, content, encode_probabilities(vector, features))
        except ServiceError as exc:
            log.warning("prediction not stored", extra={"content": content, "error": str(exc)})

    def _lookup(self, content: str, features: bool, timings: StageTimer) -> tuple[Vectors | None, bool]:
        with timings.stage("lookup"):
            stored, corrupt = self._stored(content, self._model_key, NUM_CLASSES)
        if stored is None or (features and stored[1] is None):  # features wanted, stored without: a miss
            return None, corrupt
        return Vectors(stored[0], stored[1], PredictionSource.STORE, content, None), corrupt

    def known(self, contents: Sequence[str], features: bool, timings: StageTimer) -> dict[str, Vectors]:
        """The stored answers among contents, read together (a delivery of many photos makes one read, not one
        per photo). What is missing, unreadable or lacks the features wanted is left out: classifier() finds it."""
        if self._predictions is None or not contents:
            return {}
        try:
            with timings.stage("lookup"):
                blobs = self._predictions.get_many(self._model_key, contents)
        except ServiceError as exc:
            log.warning("prediction store unavailable; using the model", extra={"error": str(exc)})
            return {}
        known = {}
        for content, blob in blobs.items():
            try:
                probabilities, stored = decode_stored(blob, NUM_CLASSES)
            except CorruptPrediction:
                continue  # classifier() reads it again, says so, and recomputes it
            if stored is not None or not features:
                known[content] = Vectors(probabilities, stored, PredictionSource.STORE, content, None)
        return known

    def stored_features(self, content: str) -> np.ndarray | None:
        """A photo's stored features, by its content alone (a correction names a photo, not where it is now)."""
        stored, _ = self._stored(content, self._model_key, NUM_CLASSES)
        return None if stored is None else stored[1]

    def classifier(self, bucket: str, name: str, listed_content: str | None, timings: StageTimer,
                   features: bool = False, known: Vectors | None = None) -> Vectors:
        """The classifier's answer. A stored prediction keyed by the listing's fingerprint needs no download at
        all; otherwise the bytes are read, fingerprinted, looked up, and only a miss reaches the decoder and the
        model. `features`: the penultimate features are needed too (a stored entry without them is a miss).
        `known`: the stored answer for the listed fingerprint, already read with its delivery's other photos."""
        if known is not None and known.content == listed_content and (known.features is not None or not features):
            return known
        corrupt = False
        if listed_content:
            found, corrupt = self._lookup(listed_content, features, timings)
            if found is not None:
                return found
        with timings.stage("download"):
            data = self._objects.read(bucket, name)
        content = content_fingerprint(data)
        if content != listed_content:  # no fingerprint listed, or the object changed since listing
            found, bad = self._lookup(content, features, timings)
            corrupt = corrupt or bad
            if found is not None:
                return Vectors(found.probabilities, found.features, found.source, content, data)
        with timings.stage("decode"):
            pixels = self._decode(data)
        with timings.stage("model"):
            probabilities, vectors = self._classifier().predict_with_features(pixels[None])
        computed = None if vectors is None else vectors[0]
        self._store(content, self._model_key, probabilities[0], computed)
        source = PredictionSource.RECOMPUTED if corrupt else PredictionSource.MODEL
        return Vectors(probabilities[0], computed, source, content, data, pixels)

    def detections(self, bucket: str, name: str, content: str, data: bytes | None, timings: StageTimer,
                   probabilities: np.ndarray, pixels: np.ndarray | None = None) -> np.ndarray | None:
        """The detector's answer for the photo: stored, or computed (reading the photo if it was not read). The
        classifier's probabilities decide where a cascade runs its full pass, so the answer is stored under the
        detector's key and the classifier's: the same for that photo whichever job or path computed it."""
        if self._detector is None:
            return None
        key = f"{self._detector_key}/after/{self._model_key}" if self._detector_key else ""
        stored, _ = self._stored(content, key, NUM_DETECTOR_CLASSES * DETECTION_WIDTH)
        if stored is not None:
            return stored[0]
        if data is None:
            with timings.stage("download"):
                data = self._objects.read(bucket, name)
        detections = detected(self._detector(), self._decode, data, probabilities, timings, pixels)
        self._store(content, key, detections)
        return detections


def detected(detector: Detector, decode: Decoder, data: bytes, probabilities: np.ndarray | None,
             timings: StageTimer, pixels: np.ndarray | None = None) -> np.ndarray:
    """The detector's answer. A single-size build runs on the photo decoded at its size. A cascade build (its
    `sizes`, smallest first) runs its small pass on what the classifier saw — `pixels`, the photo decoded at the
    classifier's size, or decoded so now when the classifier's answer was stored: the same input either way — and
    each larger pass, on the photo decoded at its size, only where the answer so far leaves a decision unsure given
    the classifier's evidence (common/domain/people.py: escalate)."""
    sizes: tuple[int, ...] = tuple(getattr(detector, "sizes", (DETECTOR_INPUT,)))
    if len(sizes) == 1:
        with timings.stage("decode"):
            pixels = decode(data, sizes[0])
    elif pixels is None:
        with timings.stage("decode"):
            pixels = decode(data)
    with timings.stage("detector"):
        answer = detector.detect(pixels)
    for size in sizes[1:]:
        if not escalate(answer, probabilities):
            break
        with timings.stage("decode"):
            pixels = decode(data, size)
        with timings.stage("detector"):
            answer = detector.detect(pixels)
    return answer
