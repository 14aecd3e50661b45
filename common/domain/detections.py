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

@dataclass(frozen=True)
class Detection:
    label: str  # the COCO class
    score: float
    box: tuple[float, float, float, float]

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "score": round(self.score, 4), "box": [round(v, 4) for v in self.box]}

    @classmethod
    def from_dict(cls, data: dict) -> Detection:  # type: ignore[type-arg]
        box = tuple(float(v) for v in data["box"])
        return cls(str(data["label"]), float(data["score"]), (box[0], box[1], box[2], box[3]))


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
