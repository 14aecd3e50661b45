"""Learn what a job's example photos teach: their features (stored, or from the model and then stored), and a
sample of the job's own photos to centre on. Once per job and instance: every delivery of the job reuses it."""
from __future__ import annotations

import itertools
import threading
from collections import OrderedDict

import numpy as np

from common.domain.errors import InvalidExamples, ObjectMissing, PermanentImageError
from common.domain.examples import BACKGROUND_SAMPLE, ExampleModel, background_sample, learn
from common.domain.jobs import JobSpec
from common.logs import get_logger
from common.ports import Listed, ObjectLister
from common.usecases.create_job import example_photos, job_images
from common.usecases.photo_vectors import PhotoVectors, StageTimer

log = get_logger("examples")
BACKGROUND_LISTING = 8 * BACKGROUND_SAMPLE  # listed to sample from: bounded, whatever the job's size
KEPT_JOBS = 16


class LearnExamples:
    def __init__(self, objects: ObjectLister, vectors: PhotoVectors) -> None:
        self._objects = objects
        self._vectors = vectors
        # A job whose examples cannot teach fails every image with the same reason: kept too, not learned again.
        self._learned: OrderedDict[JobSpec, ExampleModel | InvalidExamples] = OrderedDict()
        self._lock = threading.Lock()  # one learning at a time: concurrent deliveries of a job wait for it

    def __call__(self, spec: JobSpec) -> ExampleModel:
        with self._lock:
            if spec not in self._learned:
                try:
                    self._learned[spec] = self._learn(spec)
                except InvalidExamples as exc:
                    self._learned[spec] = exc
                while len(self._learned) > KEPT_JOBS:
                    self._learned.popitem(last=False)
            self._learned.move_to_end(spec)
            learned = self._learned[spec]
        if isinstance(learned, InvalidExamples):
            raise InvalidExamples(learned.reason)
        return learned

    def _features(self, spec: JobSpec, photos: list[Listed]) -> list[np.ndarray]:
        rows = []
        for photo in photos:
            try:
                vectors = self._vectors.classifier(spec.bucket, photo.name, photo.content, StageTimer(),
                                                   features=True)
            except (ObjectMissing, PermanentImageError):
                continue  # not an image, gone: the others decide
            if vectors.features is None:
                raise InvalidExamples("this model build gives no features, so it cannot learn example photos: "
                                      "use a build made by imgclassify (from Keras weights)")
            rows.append(vectors.features)
        return rows

    def _learn(self, spec: JobSpec) -> ExampleModel:
        examples = {}
        for name, prefix in spec.examples:
            rows = self._features(spec, example_photos(self._objects, spec.bucket, prefix))
            examples[name] = np.stack(rows) if rows else np.zeros((0, 1), np.float32)
        listed = {o.name: o for o in itertools.islice(job_images(self._objects, spec), BACKGROUND_LISTING)}
        background = self._features(spec, [listed[n] for n in background_sample(list(listed))])
        try:
            model = learn(examples, np.stack(background) if background else np.zeros((0, 1), np.float32))
        except ValueError as exc:
            raise InvalidExamples(f"examples: {exc}") from None
        log.info("examples learned", extra={"classes": list(model.classes), "background": len(background),
                                            "examples": {c: len(r) for c, r in examples.items()}})
        return model
