"""Decide which requested classes an image belongs to, from the model's probabilities. No I/O."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from common.jobs import JobSpec, Label
from common.labels import ImageNetClass, imagenet_classes


def top_labels(probabilities: np.ndarray, k: int, classes: Sequence[ImageNetClass] | None = None) -> tuple[Label, ...]:
    classes = imagenet_classes() if classes is None else classes
    k = min(k, probabilities.shape[-1])
    best = np.argpartition(-probabilities, k - 1)[:k]
    best = best[np.argsort(-probabilities[best], kind="stable")]
    return tuple(Label(int(i), classes[int(i)].name, float(probabilities[i])) for i in best)


def _label_matches(requested: str, label: Label, classes: Sequence[ImageNetClass]) -> bool:
    wanted = requested.casefold()
    entry = classes[label.index]
    return wanted == entry.name.casefold() or any(wanted == s.casefold() for s in entry.synonyms)


def match_by_label(spec: JobSpec, labels: Sequence[Label], classes: Sequence[ImageNetClass]) -> tuple[str, ...]:
    """A class matches when it names one of the top-k labels (any synonym, any case) scoring >= min_score."""
    return tuple(requested for requested in spec.classes
                 if any(label.score >= spec.min_score and _label_matches(requested, label, classes)
                        for label in labels))


def match_by_substring(spec: JobSpec, labels: Sequence[Label], classes: Sequence[ImageNetClass]) -> tuple[str, ...]:
    """The replaced service's rule: the class is a substring of the top-5 Keras label names joined together."""
    joined = ", ".join(classes[label.index].keras_name for label in labels[:5]).casefold()
    return tuple(requested for requested in spec.classes if requested.casefold() in joined)


def match_classes(spec: JobSpec, probabilities: np.ndarray) -> tuple[tuple[str, ...], tuple[Label, ...]]:
    classes = imagenet_classes()
    labels = top_labels(probabilities, max(spec.top_k, 5) if spec.match == "substring" else spec.top_k, classes)
    if spec.match == "substring":
        return match_by_substring(spec, labels, classes), labels
    return match_by_label(spec, labels, classes), labels
