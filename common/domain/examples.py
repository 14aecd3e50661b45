"""Classes defined by example photos: the decision rule, over the model's penultimate features and, where the examples
agree on one, their ImageNet meaning. No I/O.

The rule (docs/quality.md, "Classes from example photos"; bench/examples_open_world.py and bench/examples_quality.py
measure it): features are centred on the mean of an even sample of the job's own photos (the background) and its
examples, L2-normalised; each class is the normalised mean of its examples (a prototype); a photo belongs to the
class whose prototype is nearest, if it passes that class's test, decided against the folder's own photos:
- when the examples' ImageNet meaning is clear (at least 3 in 4 of them have half their probability or more under
  one WordNet synset, and that synset is at least e^1.5 ≈ 4.5 times likelier for them than for the folder's typical
  photo: four dogs, but not four roses), the photo must have half its probability or more under that synset and be
  nearer the prototype than the folder's typical (median) photo;
- otherwise its similarity must reach both the examples' own agreement (the 20th percentile of their leave-one-out
  similarities) and MARGIN robust standard deviations (1.4826 × the median absolute deviation) above the folder's
  median similarity. Examples whose own median agreement does not reach REFUSE_MARGIN of those above the folder's
  median are too few or too unlike each other to pick anything out of it: the class is refused, with the reason.
The margins are robust to the class's own photos in the folder (up to half of it). A folder of fewer than
MIN_BACKGROUND photos is no yardstick: there, the examples' agreement alone decides.
Corrections (a photo marked "not <class>") are negatives: a photo nearer to a class's negatives than to its prototype
does not belong to it.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from common.domain.jobs import MIN_EXAMPLES

BACKGROUND_SAMPLE = 128  # the job's photos the features are centred on and the thresholds calibrated against
MIN_BACKGROUND = 16  # fewer photos than this in the folder: its spread is no yardstick
THRESHOLD_QUANTILE = 0.2
MARGIN = 3.0  # robust standard deviations above the folder's median similarity
REFUSE_MARGIN = 2.0  # the examples' median agreement must reach this far above the folder's, or nothing can be told
MAD_FLOOR = 0.01
MEANING_MASS = 0.5  # probability under the examples' synset, for an example to agree and for a photo to pass
MEANING_AGREEMENT = 0.75  # of the examples
MEANING_LIFT = 1.5  # log of how much likelier the synset is for the examples than for the folder's typical photo
PRIOR_WEIGHT = 8.0  # pseudo-photos at the synset's share of ImageNet's classes: a small folder's prior is smoothed


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.atleast_2d(rows).astype(np.float32)
    unit: np.ndarray = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-8)
    return unit


def background_sample(names: Sequence[str], size: int = BACKGROUND_SAMPLE) -> list[str]:
    """An even, deterministic sample of a job's photo names: every instance that learns the job's examples centres
    on the same photos."""
    ordered = sorted(names)
    if len(ordered) <= size:
        return ordered
    step = len(ordered) / size
    return [ordered[int(i * step)] for i in range(size)]


@lru_cache(maxsize=1)
def _synsets() -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray]:
    """(names, wnids, ImageNet classes x synsets 0/1) of every WordNet synset over at least one ImageNet class."""
    from common.domain.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    nodes = [i for i, cover in enumerate(taxonomy.cover) if cover]
    cover = np.zeros((len(taxonomy.leaves), len(nodes)), np.float32)
    for column, node in enumerate(nodes):
        cover[sorted(taxonomy.cover[node]), column] = 1.0
    return (tuple(taxonomy.synsets[n]["name"] for n in nodes), tuple(taxonomy.synsets[n]["wnid"] for n in nodes),
            cover)


def synset_word(wnid: float | str) -> str:
    """A synset's first word, by its WordNet id ("n02084071") or that id's number (as a result keeps it)."""
    key = wnid if isinstance(wnid, str) else f"n{int(wnid):08d}"
    return _words().get(key, key)


@lru_cache(maxsize=1)
def _words() -> dict[str, str]:
    names, wnids, _ = _synsets()
    return {w: n.split(".")[0].replace("_", " ") for n, w in zip(names, wnids, strict=True)}


@dataclass(frozen=True)
class Meaning:
    """What the model takes the examples for, when they agree: a WordNet synset and the ImageNet classes under it."""

    synset: str
    wnid: str
    classes: np.ndarray  # ImageNet indices under the synset
    lift: float  # log of how much likelier it is for the examples than for the folder's typical photo

    def mass(self, probabilities: np.ndarray) -> float:
        return float(np.asarray(probabilities)[self.classes].sum())

    @property
    def word(self) -> str:
        return self.synset.split(".")[0].replace("_", " ")


def meaning_of(examples: np.ndarray, background: np.ndarray) -> Meaning | None:
    """The synset the examples' probabilities agree on, if any (see the module's docstring)."""
    examples = np.atleast_2d(examples)
    if len(examples) < MIN_EXAMPLES or examples.shape[1] == 0:
        return None
    names, wnids, cover = _synsets()
    if examples.shape[1] != cover.shape[0]:
        return None
    mass = examples @ cover
    share = cover.sum(axis=0) / cover.shape[0]
    seen = np.atleast_2d(background) @ cover if len(background) else np.zeros((0, cover.shape[1]), np.float32)
    prior = (seen.sum(axis=0) + PRIOR_WEIGHT * share) / (len(seen) + PRIOR_WEIGHT)
    lift = np.log(mass + 0.01).mean(axis=0) - np.log(prior + 0.01)
    agreeing = (mass >= MEANING_MASS).mean(axis=0) >= MEANING_AGREEMENT - 1e-9
    if not agreeing.any():
        return None
    best = int(np.flatnonzero(agreeing)[np.argmax(lift[agreeing])])
    if lift[best] < MEANING_LIFT:
        return None
    return Meaning(names[best], wnids[best], np.flatnonzero(cover[:, best]), float(lift[best]))


@dataclass(frozen=True)
class Verdict:
    """Why a photo is, or is not, in one taught class: the numbers its page shows."""

    similarity: float
    threshold: float
    meaning: Meaning | None = None
    mass: float | None = None  # under the meaning's synset

    @property
    def passes(self) -> bool:
        alike = self.similarity >= self.threshold - 1e-6  # float32 rounding: identical photos match
        return alike and (self.meaning is None or (self.mass is not None and self.mass >= MEANING_MASS))

    def explained(self, name: str) -> dict[str, float]:
        """Kept with the photo's result (floats only): "<class>" its similarity, "<class>/threshold", and with a
        meaning "<class>/mass" and "<class>/wnid" (the synset's WordNet offset). A class name has no '/'."""
        kept = {name: round(self.similarity, 4), f"{name}/threshold": round(self.threshold, 4)}
        if self.meaning is not None and self.mass is not None:
            kept[f"{name}/mass"] = round(self.mass, 4)
            kept[f"{name}/wnid"] = float(self.meaning.wnid[1:])
        return kept


@dataclass(frozen=True)
class ExampleModel:
    """What a job's example photos teach: one prototype, threshold and meaning per class, the centre, the negatives,
    and the classes whose examples cannot tell anything from the folder (with the reason)."""

    classes: tuple[str, ...]
    centre: np.ndarray
    prototypes: np.ndarray  # (classes, features), unit rows
    thresholds: np.ndarray  # (classes,): the similarity each needs, by its examples alone
    negatives: tuple[np.ndarray, ...] = ()  # per class, unit rows (possibly none)
    meanings: tuple[Meaning | None, ...] = ()
    meaning_thresholds: np.ndarray | None = None  # (classes,): the similarity each needs beside its meaning
    refused: dict[str, str] = field(default_factory=dict)  # class -> why its examples cannot sort this folder

    def verdicts(self, features: np.ndarray, probabilities: np.ndarray | None = None) -> dict[str, Verdict]:
        """Each class's numbers for this photo. A meaning needs the photo's probabilities; without them the class is
        decided as one without a meaning would be (by its examples' agreement)."""
        row = _unit(features - self.centre)[0]
        similarity = self.prototypes @ row
        found = {}
        for i, name in enumerate(self.classes):
            meaning = self.meanings[i] if self.meanings else None
            if meaning is not None and probabilities is not None and self.meaning_thresholds is not None:
                found[name] = Verdict(float(similarity[i]), float(self.meaning_thresholds[i]), meaning,
                                      meaning.mass(probabilities))
            else:
                found[name] = Verdict(float(similarity[i]), float(self.thresholds[i]))
        return found

    def decide(self, features: np.ndarray, probabilities: np.ndarray | None = None
               ) -> tuple[tuple[str, ...], dict[str, Verdict]]:
        """(the class the photo belongs to, if any; each class's verdict)."""
        verdicts = self.verdicts(features, probabilities)
        nearest = max(self.classes, key=lambda c: verdicts[c].similarity)
        chosen = verdicts[nearest]
        if nearest in self.refused or not chosen.passes:
            return (), verdicts
        i = self.classes.index(nearest)
        negatives = self.negatives[i] if self.negatives else np.zeros((0, len(self.centre)))
        if len(negatives) and float(np.max(negatives @ _unit(features - self.centre)[0])) > chosen.similarity:
            return (), verdicts
        return (nearest,), verdicts

    def similarities(self, features: np.ndarray, probabilities: np.ndarray | None = None) -> dict[str, float]:
        return {c: v.similarity for c, v in self.decide(features, probabilities)[1].items()}

    def matches(self, features: np.ndarray, probabilities: np.ndarray | None = None) -> tuple[str, ...]:
        return self.decide(features, probabilities)[0]


def _agreement(examples: np.ndarray) -> np.ndarray:
    """Each example's similarity to the prototype of the others."""
    return np.array([float(_unit(np.delete(examples, i, axis=0).mean(axis=0))[0] @ examples[i])
                     for i in range(len(examples))])


def _threshold(examples: np.ndarray) -> float:
    """The THRESHOLD_QUANTILE of each example's similarity to the prototype of the others."""
    return float(np.quantile(_agreement(examples), THRESHOLD_QUANTILE))


def _refusal(name: str, count: int) -> str:
    return (f"{name!r}: its {count} example photos are too unlike each other to tell such photos from the rest of "
            "this folder; add more examples (10 is better) or ones more alike")


def learn(examples: Mapping[str, np.ndarray], background: np.ndarray,
          negatives: Mapping[str, np.ndarray] | None = None,
          probabilities: Mapping[str, np.ndarray] | None = None,
          background_probabilities: np.ndarray | None = None) -> ExampleModel:
    """The model of these classes' examples (rows of features, at least MIN_EXAMPLES each), centred on the
    background (the job's photos) and the examples together. `probabilities`: the ImageNet probabilities of (some
    of) each class's examples, and of the background photos: where they agree on a meaning, it counts too."""
    classes = tuple(examples)
    if not classes:
        raise ValueError("no class has examples")
    for name, rows in examples.items():
        if len(rows) < MIN_EXAMPLES:
            raise ValueError(f"{name!r} has {len(rows)} usable example photos; at least {MIN_EXAMPLES} are needed")
    background = np.atleast_2d(background) if len(background) else np.zeros((0, 0), np.float32)
    everything = np.concatenate([*(np.atleast_2d(r) for r in examples.values()), *([background] if len(background)
                                                                                   else [])])
    centre = everything.mean(axis=0).astype(np.float32)
    folder = _unit(background - centre) if len(background) else np.zeros((0, len(centre)), np.float32)
    judged = len(folder) >= MIN_BACKGROUND
    prototypes, thresholds, beside_meaning, meanings, refused = [], [], [], [], {}
    for name in classes:
        units = _unit(examples[name] - centre)
        prototype = _unit(units.mean(axis=0))[0]
        agreement = _agreement(units)
        own = float(np.quantile(agreement, THRESHOLD_QUANTILE))
        meaning = None
        if probabilities is not None and name in probabilities and len(probabilities[name]) >= MIN_EXAMPLES:
            meaning = meaning_of(probabilities[name], background_probabilities if background_probabilities is not None
                                 else np.zeros((0, 0), np.float32))
        loose = own
        if judged:
            similar = folder @ prototype
            median = float(np.median(similar))
            spread = max(MAD_FLOOR, 1.4826 * float(np.median(np.abs(similar - median))))
            loose = max(own, median + MARGIN * spread)
            if meaning is None and float(np.median(agreement)) < median + REFUSE_MARGIN * spread:
                refused[name] = _refusal(name, len(units))
        prototypes.append(prototype)
        thresholds.append(loose)
        beside_meaning.append(min(own, median) if judged else own)
        meanings.append(meaning)
    negative_rows = tuple(_unit(negatives[c] - centre) if negatives and c in negatives and len(negatives[c])
                          else np.zeros((0, len(centre)), np.float32) for c in classes)
    return ExampleModel(classes, centre, np.stack(prototypes), np.array(thresholds, np.float32), negative_rows,
                        tuple(meanings), np.array(beside_meaning, np.float32), refused)
