"""Whether a photo shows a person, from both models' answers (issue 33). No I/O.

The detector finds people, but ImageNet names what a person wears, plays, handles or rides, not the person: someone
playing a trombone is "trombone 0.99", a man in uniform "military uniform 1.00", and the detector, busy with the
instrument or the uniform, may be less sure of the person than of a face. So when the classifier's leading class is
such a thing, a weaker detection of a person is enough. Which classes those are comes from WordNet (the hypernyms
shipped in common/data), not from a list: everything under clothing (worn), musical instruments (played), sports
and game equipment (handled), vehicles one rides on or in that are not motor cars, buses or trains (ridden), and
dogs (walked, shown, held).

How much weaker was chosen by cross-validation on the hand-labelled dev photos (bench/detector_quality.py,
docs/quality.md): the threshold drops by LOWERED_BY when such a class leads with at least LEAD_MIN of the mass
(LEAD_MIN was fixed beforehand, not fitted).
A photo that matches says why: the detector's score and box, or that and the classifier's evidence.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from common.domain.detections import Detection, unsure
from common.domain.jobs import DETECTOR_MIN_SCORE
from common.domain.labels import imagenet_classes
from common.domain.taxonomy import resolve

# (what a person does with it, the WordNet synsets whose ImageNet classes are such things, synsets left out)
GROUPS: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("wearing", ("clothing.n.01",), ()),
    ("playing", ("musical_instrument.n.01",), ()),
    ("handling", ("sports_equipment.n.01", "game_equipment.n.01"), ()),
    # Ridden: bicycles, carts, small boats, forklifts; not what carries people out of sight (cars, buses, trains,
    # ships, which WordNet puts under motor vehicles, public transport, locomotives and ships).
    ("riding", ("wheeled_vehicle.n.01", "boat.n.01"),
     ("motor_vehicle.n.01", "public_transport.n.01", "locomotive.n.01", "car.n.02", "ship.n.01")),
    # Walked, shown, held: chosen over "domestic animals" (which adds cats) and over none, inside every training
    # fold of the cross-validation (docs/quality.md): a dog show's handlers, a dog on a lap.
    ("with a dog", ("dog.n.01",), ()),
)
LOWERED_BY = 0.2  # chosen by cross-validation (bench/detector_quality.py); see docs/quality.md
LEAD_MIN = 0.3  # fixed, not fitted: below it the classifier has not said what the photo is of


@lru_cache(maxsize=1)
def group_of_class() -> dict[int, str]:
    """ImageNet class index -> the group it belongs to (the first that claims it)."""
    found: dict[int, str] = {}
    for group, synsets, excluded in GROUPS:
        members = frozenset().union(*(resolve(s).classes for s in synsets))
        left_out = frozenset().union(*(resolve(s).classes for s in excluded)) if excluded else frozenset()
        for index in sorted(members - left_out):
            found.setdefault(index, group)
    return found


def group_masses(probabilities: np.ndarray) -> dict[str, float]:
    """The classifier's probability under each group."""
    masses = {group: 0.0 for group, _, _ in GROUPS}
    for index, group in group_of_class().items():
        masses[group] += float(probabilities[index])
    return masses


@dataclass(frozen=True)
class Evidence:
    """What the classifier says a person may be doing: 'wearing: swim trunks / shorts 0.64'."""

    group: str
    label: str
    probability: float

    def __str__(self) -> str:
        return f"{self.group}: {self.label} {self.probability:.2f}"


def leading_evidence(probabilities: np.ndarray, lead_min: float = LEAD_MIN) -> Evidence | None:
    """The classifier's leading class, when it is worn, played, handled, ridden or a dog and has lead_min of the
    mass."""
    top = int(np.argmax(probabilities))
    group = group_of_class().get(top)
    if group is None or float(probabilities[top]) < lead_min:
        return None
    return Evidence(group, imagenet_classes()[top].name, float(probabilities[top]))


@dataclass(frozen=True)
class PersonCall:
    """The decision for one photo, and what it rests on."""

    matched: bool
    score: float  # the detector's best person score
    threshold: float  # what it had to reach
    evidence: Evidence | None = None  # present when it lowered the threshold

    def why(self) -> str:
        """'person 0.52 ≥ 0.45 (wearing: swim trunks / shorts 0.64)' — the report's line."""
        sign = "≥" if self.matched else "<"
        told = f" ({self.evidence})" if self.evidence is not None else ""
        return f"person {self.score:.2f} {sign} {self.threshold:.2f}{told}"


def call_person(probabilities: np.ndarray | None, score: float, detector_min: float,
                lowered_by: float = LOWERED_BY, lead_min: float = LEAD_MIN) -> PersonCall:
    """The detector's person score against detector_min, or against detector_min - lowered_by when the
    classifier's leading class is something a person wears, plays, handles or rides."""
    evidence = leading_evidence(probabilities, lead_min) if probabilities is not None and lowered_by > 0 else None
    threshold = detector_min - lowered_by if evidence is not None else detector_min
    return PersonCall(score >= threshold, score, threshold, evidence)


def escalate(small: np.ndarray, probabilities: np.ndarray | None, detector_min: float = DETECTOR_MIN_SCORE) -> bool:
    """Whether the detector's small pass leaves a person or a decided animal too near its threshold to be trusted
    (common/domain/detections.py: unsure). A person's threshold is the one call_person will hold the score to: the
    classifier's evidence, known before the detector runs, lowers it, and so the band the full pass is needed in.
    It depends on the photo and the classifier's answer only (never on a job): a stored answer is the same whoever
    computed it."""
    threshold = call_person(probabilities, 0.0, detector_min).threshold
    return unsure(small, threshold, detector_min)


def weigh(detection: Detection, probabilities: np.ndarray | None, detector_min: float) -> Detection:
    """A detection as the match decides it: a person's carries the lowered threshold and the evidence that
    lowered it (its page says so); any other class's is held to detector_min as before."""
    if detection.label != "person":
        return detection
    call = call_person(probabilities, detection.score, detector_min)
    if call.evidence is None:
        return detection
    return replace(detection, threshold=call.threshold, evidence=str(call.evidence))
