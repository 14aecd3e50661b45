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
    return top_labels_many(probabilities[None], k, classes)[0]


def top_labels_many(probabilities: np.ndarray, k: int,
                    classes: Sequence[ImageNetClass] | None = None) -> list[tuple[Label, ...]]:
    """The top k labels of each row (one photo each): one selection over the matrix. A photo's labels are the same
    alone or among others (each row is selected and sorted by itself)."""
    classes = imagenet_classes() if classes is None else classes
    k = min(k, probabilities.shape[-1])
    best = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
    scores = np.take_along_axis(probabilities, best, axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")
    best, scores = np.take_along_axis(best, order, axis=1).tolist(), np.take_along_axis(scores, order, axis=1).tolist()
    return [tuple(Label(i, classes[i].name, score) for i, score in zip(row, row_scores))
            for row, row_scores in zip(best, scores)]


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
    return hierarchy_scores_many(classes, probabilities[None], taught)[0]


def hierarchy_scores_many(classes: Sequence[str], probabilities: np.ndarray,
                          taught: Sequence[str] = ()) -> list[dict[str, float]]:
    """hierarchy_scores of each row: one sum per class over the matrix. Summed in order, in float64, so that a row's
    sum is the same bits whatever the other rows are (numpy's pairwise sums over a matrix are not)."""
    columns = {requested: _mass(probabilities, class_indices(requested)) if not (requested in taught and not
               is_word(requested)) else [0.0] * len(probabilities) for requested in classes}
    return [{requested: column[row] for requested, column in columns.items()} for row in range(len(probabilities))]


def _mass(probabilities: np.ndarray, indices: np.ndarray) -> list[float]:
    if not len(indices):
        return [0.0] * len(probabilities)
    sums: list[float] = np.cumsum(probabilities[:, indices], axis=1, dtype=np.float64)[:, -1].tolist()
    return sums


def _passes(spec: JobSpec, score: float) -> bool:
    """The hierarchy rule's threshold: some mass under the class, at least min_score of it."""
    return score >= spec.min_score and score > 0.0


def match_many(spec: JobSpec, probabilities: np.ndarray) -> list[MatchOutcome]:
    """match_classes for the rows of a matrix (a photo each) where neither the detector nor examples take part
    (the caller's to know): the same rules, each selection and sum made once over all the rows."""
    classes = imagenet_classes()
    if spec.match == MatchMode.SUBSTRING:
        return [MatchOutcome(match_by_substring(spec, labels, classes), labels[:spec.top_k])
                for labels in top_labels_many(probabilities, max(spec.top_k, 5), classes)]
    many = top_labels_many(probabilities, spec.top_k, classes)
    if spec.match == MatchMode.LABEL:
        return [MatchOutcome(match_by_label(spec, labels, classes), labels) for labels in many]
    return [MatchOutcome(tuple(c for c in spec.classes if _passes(spec, scores[c])), labels, scores)
            for labels, scores in zip(many, hierarchy_scores_many(spec.classes, probabilities))]


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
    matched = tuple(c for c in spec.classes if _passes(spec, scores[c]) or
                    (c in found and found[c].passes(spec.detector_min_score)) or c in by_examples)
    similarities = {key: value for c, verdict in verdicts.items() for key, value in verdict.explained(c).items()}
    return MatchOutcome(matched, labels, scores, found, similarities)
