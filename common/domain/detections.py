"""What the object detector said about a photo, and what it means for a job's classes. No I/O.

The detector answers, per COCO class, its best score in the photo and that detection's box (fractions of the
photo: x0, y0, x1, y1). A requested class is detected at the best score among the COCO classes under its WordNet
meaning ("animals": cat, dog, horse…; "people": person).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from common.domain.taxonomy import load_taxonomy, resolve

NUM_DETECTOR_CLASSES = 80
DETECTION_WIDTH = 5  # score, x0, y0, x1, y1
# NanoDet's input normalisation (RangiLyu/nanodet), in BGR order: the builder puts it in the graph, the runtime
# applies it to builds without it.
MEAN_BGR = np.array([103.53, 116.28, 123.675], dtype=np.float32)
STD_BGR = np.array([57.375, 57.12, 58.395], dtype=np.float32)

@dataclass(frozen=True)
class Detection:
    label: str  # the COCO class
    score: float
    box: tuple[float, float, float, float]
    # Set when the classifier's evidence moved what the score must reach (common/domain/people.py): the threshold
    # it was held to, and the evidence ("wearing: military uniform 1.00"); kept with the result for its page.
    threshold: float | None = None
    evidence: str | None = None

    def passes(self, default: float) -> bool:
        return self.score >= (default if self.threshold is None else self.threshold)

    def to_dict(self) -> dict[str, object]:
        kept: dict[str, object] = {"label": self.label, "score": round(self.score, 4),
                                   "box": [round(v, 4) for v in self.box]}
        if self.threshold is not None and self.evidence is not None:
            kept |= {"threshold": round(self.threshold, 4), "evidence": self.evidence}
        return kept

    @classmethod
    def from_dict(cls, data: dict) -> Detection:  # type: ignore[type-arg]
        box = tuple(float(v) for v in data["box"])
        threshold, evidence = data.get("threshold"), data.get("evidence")
        return cls(str(data["label"]), float(data["score"]), (box[0], box[1], box[2], box[3]),
                   None if threshold is None else float(threshold), None if evidence is None else str(evidence))


@lru_cache(maxsize=1)
def coco_names() -> tuple[str, ...]:
    return tuple(entry["name"] for entry in load_taxonomy().coco)


def best_detection(requested: str, detections: np.ndarray) -> Detection | None:
    """The best detection among the COCO classes under a requested class, None when none is under it."""
    indices = sorted(resolve(requested).detector_classes)
    if not indices:
        return None
    rows = detections.reshape(NUM_DETECTOR_CLASSES, DETECTION_WIDTH)
    best = max(indices, key=lambda i: float(rows[i, 0]))
    x0, y0, x1, y1 = (float(v) for v in rows[best, 1:])
    return Detection(coco_names()[best], float(rows[best, 0]), (x0, y0, x1, y1))


# The cascade (common/usecases/photo_vectors.py: detected): a cheap small-input pass is trusted where it is sure,
# the full-size pass runs where it is not. Sure means: every person or animal the detector decides on its own (a
# person, and the animals ImageNet covers weakly: horse, sheep, cow, elephant, bear, zebra, giraffe) scores below
# the threshold its decision uses by more than its margin, or at least UNSURE_ABOVE over it. A person's threshold
# is known before the detector runs: 0.65, or 0.45 where the classifier's evidence lowers it
# (common/domain/people.py: escalate); an animal's is the default. A person's margin is wider: at 256 pixels a
# small figure scores far less than at 416 (a sailor in a yawl, where "riding: yawl" lowers the threshold to 0.45:
# 0.21 against 0.51), and on the dev photos no person's 416 score crossed its threshold from more than 0.25 below it
# at 256; no animal decision changed from 0.15 to 0.25 below (the animals in ImageNet's photos are their subject,
# not a figure in the distance). Above: a 256 score past its threshold mostly stands. Chosen by cross-validation on
# the labelled dev photos (bench/detector_quality.py, docs/quality.md). Objects (ties, cups, chairs…) would have
# the full pass run for most photos: their small-pass word stands.
UNSURE_BELOW_PERSON = 0.25
UNSURE_BELOW = 0.15
UNSURE_ABOVE = 0.05
LIVING = ("person.n.01", "animal.n.01")  # not plants: a potted plant is an object here


@lru_cache(maxsize=1)
def decided_classes() -> np.ndarray:
    """The COCO people and animals whose own WordNet meaning has fewer than 5 ImageNet classes (the detector
    decides them): person, horse, sheep, cow, elephant, bear, zebra, giraffe."""
    taxonomy = load_taxonomy()
    living = frozenset().union(*(resolve(root).detector_classes for root in LIVING))
    return np.array([i for i, entry in enumerate(taxonomy.coco) if i in living
                     and resolve(taxonomy.synsets[entry["synset"]]["name"]).needs_detector], dtype=np.intp)


@lru_cache(maxsize=1)
def _is_person() -> np.ndarray:
    return np.array([coco_names()[i] == "person" for i in decided_classes()])


def unsure(detections: np.ndarray, person_threshold: float, threshold: float,
           below_person: float = UNSURE_BELOW_PERSON, below: float = UNSURE_BELOW, above: float = UNSURE_ABOVE) -> bool:
    """Whether a small pass's answer leaves a class the detector decides near the threshold its decision uses
    (person_threshold for a person, threshold for the animals): from its margin under it (below_person, below) to
    `above` over it."""
    scores = detections.reshape(NUM_DETECTOR_CLASSES, DETECTION_WIDTH)[decided_classes(), 0]
    person = _is_person()
    thresholds = np.where(person, person_threshold, threshold)
    margins = np.where(person, below_person, below)
    return bool(((scores >= thresholds - margins) & (scores < thresholds + above)).any())
