"""Classes defined by example photos: the decision rule, over the model's penultimate features. No I/O.

The rule, chosen on the dev photos (docs/quality.md, "Classes from examples"; bench/examples_quality.py measures it
against its ceiling): features are centred on the mean of a sample of the job's own photos and its examples,
L2-normalised; each class is the normalised mean of its examples (a prototype); a photo belongs to the class whose
prototype is nearest, if its similarity reaches the class's threshold: the 20th percentile of the examples' own
leave-one-out similarities (each example against the prototype of the others). Centring on the job's photos matters most (macro F1 0.64 vs
0.52 centred on the examples alone); a logistic probe with the other classes' examples as negatives, flips and
crops of the examples, and earlier feature layers all measured lower or within noise.
Corrections (a photo marked "not <class>") are negatives: a photo nearer to a class's negatives than to its
prototype does not belong to it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from common.domain.jobs import MIN_EXAMPLES

BACKGROUND_SAMPLE = 128  # the job's photos the features are centred on
THRESHOLD_QUANTILE = 0.2


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.atleast_2d(rows).astype(np.float32)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-8)


def background_sample(names: Sequence[str], size: int = BACKGROUND_SAMPLE) -> list[str]:
    """An even, deterministic sample of a job's photo names: every instance that learns the job's examples centres
    on the same photos."""
    ordered = sorted(names)
    if len(ordered) <= size:
        return ordered
    step = len(ordered) / size
    return [ordered[int(i * step)] for i in range(size)]


@dataclass(frozen=True)
class ExampleModel:
    """What a job's example photos teach: one prototype and threshold per class, the centre, the negatives."""

    classes: tuple[str, ...]
    centre: np.ndarray
    prototypes: np.ndarray  # (classes, features), unit rows
    thresholds: np.ndarray  # (classes,)
    negatives: tuple[np.ndarray, ...] = ()  # per class, unit rows (possibly none)

    def decide(self, features: np.ndarray) -> tuple[tuple[str, ...], dict[str, float]]:
        """(the class the photo belongs to, if any; its similarity to each class's prototype)."""
        row = _unit(features - self.centre)[0]
        similarity = self.prototypes @ row
        similarities = {c: float(s) for c, s in zip(self.classes, similarity)}
        nearest = int(np.argmax(similarity))
        if similarity[nearest] < self.thresholds[nearest] - 1e-6:  # float32 rounding: identical photos match
            return (), similarities
        negatives = self.negatives[nearest] if self.negatives else np.zeros((0, len(row)))
        if len(negatives) and float(np.max(negatives @ row)) > similarity[nearest]:
            return (), similarities
        return (self.classes[nearest],), similarities

    def similarities(self, features: np.ndarray) -> dict[str, float]:
        return self.decide(features)[1]

    def matches(self, features: np.ndarray) -> tuple[str, ...]:
        return self.decide(features)[0]


def _threshold(examples: np.ndarray) -> float:
    """The THRESHOLD_QUANTILE of each example's similarity to the prototype of the others."""
    similarities = []
    for i in range(len(examples)):
        others = np.delete(examples, i, axis=0)
        similarities.append(float(_unit(others.mean(axis=0))[0] @ examples[i]))
    return float(np.quantile(similarities, THRESHOLD_QUANTILE))


def learn(examples: Mapping[str, np.ndarray], background: np.ndarray,
          negatives: Mapping[str, np.ndarray] | None = None) -> ExampleModel:
    """The model of these classes' examples (rows of features, at least MIN_EXAMPLES each), centred on the
    background (the job's photos) and the examples together."""
    classes = tuple(examples)
    if not classes:
        raise ValueError("no class has examples")
    for name, rows in examples.items():
        if len(rows) < MIN_EXAMPLES:
            raise ValueError(f"{name!r} has {len(rows)} usable example photos; at least {MIN_EXAMPLES} are needed")
    everything = np.concatenate([*(np.atleast_2d(r) for r in examples.values()),
                                 *([np.atleast_2d(background)] if len(background) else [])])
    centre = everything.mean(axis=0).astype(np.float32)
    units = {c: _unit(examples[c] - centre) for c in classes}
    prototypes = np.concatenate([_unit(units[c].mean(axis=0)) for c in classes])
    thresholds = np.array([_threshold(units[c]) for c in classes], dtype=np.float32)
    negative_rows = tuple(_unit(negatives[c] - centre) if negatives and c in negatives and len(negatives[c])
                          else np.zeros((0, len(centre)), np.float32) for c in classes)
    return ExampleModel(classes, centre, prototypes, thresholds, negative_rows)
