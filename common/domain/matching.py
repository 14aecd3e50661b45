"""Decide which requested classes an image belongs to, from the model's probabilities. No I/O.

Three rules (a job's `match`):
- hierarchy (default): the class resolves to WordNet synsets; its score is the probability mass over the ImageNet
  classes descending from them; it matches at score >= min_score.
- label: the class names one of the top-k labels (any synonym, any case) whose score is >= min_score.
- substring: the replaced service's rule, kept for users who depend on it: the class is a substring of the top-5
  Keras label names joined together.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from common.domain.detections import Detection, best_detection
from common.domain.examples import ExampleModel
from common.domain.jobs import JobSpec
from common.domain.labels import ImageNetClass, imagenet_classes
from common.domain.options import MatchMode
from common.domain.people import weigh
from common.domain.results import Label
from common.domain.taxonomy import is_word, resolve


@dataclass(frozen=True)
class MatchOutcome:
    matched: tuple[str, ...]
    labels: tuple[Label, ...]
    scores: dict[str, float] = field(default_factory=dict)
    detections: dict[str, Detection] = field(default_factory=dict)
    # Classes with examples: the photo's similarity to their prototype, and what it was held to (examples.Verdict)
    similarities: dict[str, float] = field(default_factory=dict)


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
    return tuple(requested for requested in spec.classes
                 if any(label.score >= spec.min_score and _label_matches(requested, label, classes)
                        for label in labels))


def match_by_substring(spec: JobSpec, labels: Sequence[Label], classes: Sequence[ImageNetClass]) -> tuple[str, ...]:
    joined = ", ".join(classes[label.index].keras_name for label in labels[:5]).casefold()
    return tuple(requested for requested in spec.classes if requested.casefold() in joined)


@lru_cache(maxsize=4096)
def class_indices(requested: str) -> np.ndarray:
    return np.array(sorted(resolve(requested).classes), dtype=np.intp)


def hierarchy_scores(classes: Sequence[str], probabilities: np.ndarray,
                     taught: Sequence[str] = ()) -> dict[str, float]:
    """Mass under each class; a class taught by examples that is no WordNet noun has none (0.0)."""
    return {requested: 0.0 if requested in taught and not is_word(requested) else
            float(probabilities[class_indices(requested)].sum()) for requested in classes}


def match_classes(spec: JobSpec, probabilities: np.ndarray, detections: np.ndarray | None = None,
                  examples: ExampleModel | None = None, features: np.ndarray | None = None) -> MatchOutcome:
    """Hierarchy matching takes the detector's word too, when it ran: a class matches when the classifier's mass
    under it or the detector's best score for it passes its threshold (multi-label: a person walking a dog is
    both). A class with examples also matches when its examples say so (common/domain/examples.py)."""
    classes = imagenet_classes()
    if spec.match == MatchMode.SUBSTRING:
        labels = top_labels(probabilities, max(spec.top_k, 5), classes)
        return MatchOutcome(match_by_substring(spec, labels, classes), labels[:spec.top_k])
    labels = top_labels(probabilities, spec.top_k, classes)
    if spec.match == MatchMode.LABEL:
        return MatchOutcome(match_by_label(spec, labels, classes), labels)
    taught = examples.classes if examples is not None and features is not None else ()
    scores = hierarchy_scores(spec.classes, probabilities, taught)
    found = {} if detections is None else {c: weigh(d, probabilities, spec.detector_min_score) for c in spec.classes
                                           if c not in taught or is_word(c)
                                           if (d := best_detection(c, detections)) is not None}
    by_examples, verdicts = examples.decide(features, probabilities) if examples is not None and \
        features is not None else ((), {})
    matched = tuple(c for c in spec.classes if (scores[c] >= spec.min_score and scores[c] > 0.0) or
                    (c in found and found[c].passes(spec.detector_min_score)) or c in by_examples)
    similarities = {key: value for c, verdict in verdicts.items() for key, value in verdict.explained(c).items()}
    return MatchOutcome(matched, labels, scores, found, similarities)
