"""Learn what a job's example photos teach: their features (stored, or from the model and then stored), and a
sample of the job's own photos to centre on. Once per job and instance: every delivery of the job reuses it."""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from common.domain.errors import InvalidExamples, ObjectMissing, PermanentImageError, ServiceError
from common.domain.examples import BACKGROUND_SAMPLE, ExampleModel, background_sample, learn
from common.domain.jobs import MAX_EXAMPLES, MIN_EXAMPLES, JobSpec
from common.logs import get_logger
from common.ports import Classifier, Corrections, Listed, ObjectLister
from common.usecases.create_job import example_photos, job_images
from common.usecases.photo_vectors import PhotoVectors, StageTimer

log = get_logger("examples")
BACKGROUND_LISTING = 8 * BACKGROUND_SAMPLE  # listed to sample from: bounded, whatever the job's size
KEPT_JOBS = 16
NO_FEATURES = ("this model build gives no features, so it cannot learn example photos: pass Keras weights "
               "(--weights FILE.weights.h5; imgclassify builds a LiteRT model with features from them) or a .tflite "
               "imgclassify built (named …-b2-….tflite)")


def examples_refusal(classifier: Classifier) -> str | None:
    """Before a job with examples sorts anything: NO_FEATURES when this model build gives no features (one blank
    photo through it), else None. What `run --examples` asks before creating the job."""
    _, features = classifier.predict_with_features(np.zeros((1, 224, 224, 3), np.uint8))
    return NO_FEATURES if features is None else None


@dataclass(frozen=True)
class Taught:
    """What a job learns before its first image: its example model (None when no class has examples) and what
    people said of photos under its classes (class -> content -> belongs)."""

    model: ExampleModel | None
    said: dict[str, dict[str, bool]] = field(default_factory=dict)


class LearnExamples:
    def __init__(self, objects: ObjectLister, vectors: PhotoVectors, corrections: Corrections) -> None:
        self._objects = objects
        self._vectors = vectors
        self._corrections = corrections
        # A job whose examples cannot teach fails every image with the same reason: kept too, not learned again.
        self._learned: OrderedDict[tuple[object, ...], Taught | InvalidExamples] = OrderedDict()
        self._lock = threading.Lock()  # one learning at a time: concurrent deliveries of a job wait for it

    def __call__(self, job_id: str, spec: JobSpec) -> Taught:
        # Per job: a later job (even one asking the same) sees examples and corrections added since.
        key = (job_id, spec)
        with self._lock:
            if key not in self._learned:
                try:
                    self._learned[key] = self._learn(spec)
                except InvalidExamples as exc:
                    self._learned[key] = exc
                while len(self._learned) > KEPT_JOBS:
                    self._learned.popitem(last=False)
            self._learned.move_to_end(key)
            learned = self._learned[key]
        if isinstance(learned, InvalidExamples):
            raise InvalidExamples(learned.reason)
        return learned

    def _vectors_of(self, spec: JobSpec, photos: list[Listed], wanted: int | None = None
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """(features, probabilities) of the photos that decode, the first `wanted` of them when given."""
        rows: list[np.ndarray] = []
        probabilities: list[np.ndarray] = []
        for photo in photos:
            if wanted is not None and len(rows) >= wanted:
                break
            try:
                vectors = self._vectors.classifier(spec.bucket, photo.name, photo.content, StageTimer(),
                                                   features=True)
            except (ObjectMissing, PermanentImageError):
                continue  # not an image, gone: the others decide
            if vectors.features is None:
                raise InvalidExamples(NO_FEATURES)
            rows.append(vectors.features)
            probabilities.append(vectors.probabilities)
        return rows, probabilities

    def _said(self, spec: JobSpec) -> dict[str, dict[str, bool]]:
        try:
            return {c: found for c in spec.classes if (found := self._corrections.corrections(spec.bucket,
                                                                                              c.casefold()))}
        except ServiceError as exc:  # corrections refine a job; a store that fails leaves it as it was asked
            log.warning("corrections unavailable", extra={"error": str(exc)})
            return {}

    def _corrected(self, contents: list[str]) -> list[np.ndarray]:
        """The stored features of corrected photos (a correction names a photo some job already classified)."""
        return [f for c in contents if (f := self._vectors.stored_features(c)) is not None]

    def _learn(self, spec: JobSpec) -> Taught:
        said = self._said(spec)
        prefixes = dict(spec.examples)
        examples, negatives, meanings = {}, {}, {}
        for name in spec.classes:
            positives = self._corrected([c for c, belongs in said.get(name, {}).items() if belongs])
            if name in prefixes:
                prefix = prefixes[name]
                rows, probabilities = self._vectors_of(spec, example_photos(self._objects, spec.bucket, prefix),
                                                       MAX_EXAMPLES) if prefix else ([], [])
                if probabilities:  # what the model takes them for: the photos', not the corrections'
                    meanings[name] = np.stack(probabilities)
                rows += positives
                examples[name] = np.stack(rows) if rows else np.zeros((0, 1), np.float32)
            elif len(positives) >= MIN_EXAMPLES:  # taught by corrections alone
                examples[name] = np.stack(positives)
            wrong = self._corrected([c for c, belongs in said.get(name, {}).items() if not belongs])
            if wrong:
                negatives[name] = np.stack(wrong)
        if not examples:
            return Taught(None, said)
        listed = {o.name: o for o in itertools.islice(job_images(self._objects, spec), BACKGROUND_LISTING)}
        background, seen = self._vectors_of(spec, [listed[n] for n in background_sample(list(listed))])
        try:
            model = learn(examples, np.stack(background) if background else np.zeros((0, 1), np.float32), negatives,
                          meanings, np.stack(seen) if seen else np.zeros((0, 1), np.float32))
        except ValueError as exc:
            raise InvalidExamples(f"examples: {exc}") from None
        # Nothing is sorted rather than a folder sorted at random: one line says why. A class taught by corrections
        # alone is not refused: its corrected photos are followed exactly, and it learns nothing more from them.
        refused = [model.refused[c] for c in model.classes if c in model.refused and prefixes.get(c)]
        if refused:
            raise InvalidExamples("examples: " + "; ".join(refused))
        log.info("examples learned", extra={
            "classes": list(model.classes), "background": len(background),
            "examples": {c: len(r) for c, r in examples.items()},
            "meanings": {c: m.synset for c, m in zip(model.classes, model.meanings, strict=True) if m is not None},
            "thresholds": {c: round(float(t), 4) for c, t in zip(model.classes, model.thresholds, strict=True)}})
        return Taught(model, said)
