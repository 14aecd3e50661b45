"""People found wherever a person is (issue 33): the classifier's evidence lowers the detector's threshold for a
person, the groups come from WordNet, the decision explains itself and is kept with the result; the cascade's
notion of an unsure small pass."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.domain.detections import (DETECTION_WIDTH, NUM_DETECTOR_CLASSES, UNSURE_ABOVE, UNSURE_BELOW,
                                      UNSURE_BELOW_PERSON, Detection,
                                      coco_names, decided_classes, unsure)
from common.domain.jobs import DETECTOR_MIN_SCORE, JobSpec
from common.domain.labels import imagenet_classes
from common.domain.matching import match_classes
from common.domain.people import LEAD_MIN, LOWERED_BY, call_person, escalate, group_of_class, leading_evidence, \
    weigh
from tests.conftest import PHOTOS

PERSON = coco_names().index("person")


def index(name: str) -> int:
    return next(i for i, c in enumerate(imagenet_classes()) if c.name == name)


def led_by(name: str, probability: float = 0.9) -> np.ndarray:
    """A distribution whose leading class is `name` with `probability`, the rest spread evenly."""
    p = np.full(1000, (1 - probability) / 999, dtype=np.float32)
    p[index(name)] = probability
    return p


def detections(person: float, **others: float) -> np.ndarray:
    d = np.zeros((NUM_DETECTOR_CLASSES, DETECTION_WIDTH), dtype=np.float32)
    d[PERSON] = (person, 0.1, 0.2, 0.5, 0.9)
    for label, score in others.items():
        d[coco_names().index(label), 0] = score
    return d


def test_the_groups_come_from_wordnet_what_people_wear_play_handle_ride_and_walk():
    groups = group_of_class()
    assert groups[index("trombone")] == "playing" and groups[index("military uniform")] == "wearing"
    assert groups[index("dumbbell")] == "handling" and groups[index("unicycle")] == "riding"
    assert groups[index("kayak")] == "riding" and groups[index("Leonberger")] == "with a dog"
    # Cars, buses, trains and ships carry people out of sight; cats, flowers and food are no one's doing.
    for name in ("sports car", "school bus", "steam locomotive", "container ship", "tabby cat", "daisy", "pizza"):
        assert index(name) not in groups, name


def test_a_person_playing_a_trombone_is_found_at_the_lowered_threshold_and_says_why():
    spec = JobSpec(("people",), "b")
    outcome = match_classes(spec, led_by("trombone", 0.99), detections(0.5))
    assert outcome.matched == ("people",)
    kept = outcome.detections["people"].to_dict()
    assert kept["threshold"] == pytest.approx(DETECTOR_MIN_SCORE - LOWERED_BY)
    assert kept["evidence"] == "playing: trombone 0.99"
    back = Detection.from_dict(kept)  # stored and read back as it was
    assert back.to_dict() == kept and back.evidence == kept["evidence"] and back.passes(DETECTOR_MIN_SCORE)


def test_without_such_evidence_the_threshold_stays_and_the_result_carries_nothing_more():
    spec = JobSpec(("people",), "b")
    for probabilities in (led_by("daisy", 0.99), led_by("trombone", LEAD_MIN - 0.05)):
        outcome = match_classes(spec, probabilities, detections(0.5))
        assert outcome.matched == () and set(outcome.detections["people"].to_dict()) == {"label", "score", "box"}
    assert match_classes(spec, led_by("daisy"), detections(0.7)).matched == ("people",)


def test_a_jobs_own_detector_threshold_moves_the_lowered_one_with_it_and_horses_are_untouched():
    strict = JobSpec(("people", "horses"), "b", detector_min_score=0.9)
    assert match_classes(strict, led_by("trombone"), detections(0.65)).matched == ()
    assert match_classes(strict, led_by("trombone"), detections(0.72)).matched == ("people",)
    # Evidence for a person says nothing about a horse.
    assert match_classes(JobSpec(("horses",), "b"), led_by("unicycle"), detections(0.0, horse=0.5)).matched == ()


@settings(max_examples=300, deadline=None)
@given(score=st.floats(0, 1), detector_min=st.floats(0.3, 1), lead=st.floats(0, 1),
       leader=st.sampled_from(["trombone", "military uniform", "Leonberger", "daisy", "sports car", "tabby cat"]))
def test_evidence_only_ever_lowers_the_bar_and_only_when_it_leads(score, detector_min, lead, leader):
    probabilities = led_by(leader, lead) if lead > 0.01 else np.full(1000, 1 / 1000, dtype=np.float32)
    call = call_person(probabilities, score, detector_min)
    plain = call_person(None, score, detector_min)
    assert plain.threshold == detector_min and plain.matched == (score >= detector_min)
    assert call.matched == (score >= call.threshold) and (plain.matched <= call.matched)  # never loses a match
    leads = leading_evidence(probabilities) is not None
    assert leads == (index(leader) in group_of_class() and float(probabilities.max()) >= LEAD_MIN
                     and int(np.argmax(probabilities)) == index(leader))
    assert call.threshold == pytest.approx(detector_min - LOWERED_BY if leads else detector_min)
    assert (call.evidence is not None) == leads
    assert call.why().startswith(f"person {score:.2f} {'≥' if call.matched else '<'} {call.threshold:.2f}")


def test_weigh_leaves_other_classes_and_plain_photos_as_they_were():
    horse = Detection("horse", 0.5, (0, 0, 1, 1))
    assert weigh(horse, led_by("unicycle"), 0.65) is horse
    person = Detection("person", 0.5, (0, 0, 1, 1))
    assert weigh(person, led_by("daisy"), 0.65) is person and not person.passes(0.65)
    lowered = weigh(person, led_by("kayak"), 0.65)
    assert lowered.passes(0.65) and lowered.evidence == "riding: kayak 0.90"


def test_the_small_pass_is_unsure_only_about_people_and_animals_near_their_thresholds():
    decided = {coco_names()[i] for i in decided_classes()}
    assert decided == {"person", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe"}
    assert not unsure(detections(0.9, horse=0.1, cup=0.5), 0.65, 0.65)  # a cup's word stands
    assert unsure(detections(0.9, horse=0.55), 0.65, 0.65)
    assert unsure(detections(0.65 - UNSURE_BELOW_PERSON), 0.65, 0.65)
    assert not unsure(detections(0.65 - UNSURE_BELOW_PERSON - 0.01, horse=0.65 - UNSURE_BELOW - 0.01), 0.65, 0.65)
    assert unsure(detections(0.9, horse=0.65 - UNSURE_BELOW), 0.65, 0.65)
    assert unsure(detections(0.45), 0.65, 0.65)  # a person's margin is wider
    assert not unsure(detections(0.0, horse=0.45), 0.65, 0.65)  # than a horse's
    assert not unsure(detections(0.66 + UNSURE_ABOVE, giraffe=0.66 + UNSURE_ABOVE), 0.65, 0.65)
    assert unsure(detections(0.3), 0.45, 0.65) and not unsure(detections(0.3), 0.65, 0.65)  # the person's own


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=NUM_DETECTOR_CLASSES, max_size=NUM_DETECTOR_CLASSES),
       st.floats(0.3, 0.9), st.floats(0.3, 0.9))
def test_unsure_is_exactly_a_decided_class_near_its_threshold(scores, person_threshold, threshold):
    d = np.zeros((NUM_DETECTOR_CLASSES, DETECTION_WIDTH), dtype=np.float32)
    d[:, 0] = scores
    near = [(person_threshold - UNSURE_BELOW_PERSON if i == PERSON else threshold - UNSURE_BELOW) <= float(d[i, 0]) <
            (person_threshold if i == PERSON else threshold) + UNSURE_ABOVE for i in decided_classes()]
    assert unsure(d, person_threshold, threshold) == any(near)


def test_the_classifier_s_evidence_moves_where_the_full_pass_is_needed():
    # A sailor in a yawl: 0.21 at 256 (0.51 at 416). With "riding: yawl" leading the person's threshold is 0.45 and
    # 0.21 is near it; under a daisy it is 0.65 and 0.21 is far below: the small pass's answer stands.
    faint, yawl = detections(0.21), led_by("yawl (boat)")
    assert escalate(faint, yawl) and not escalate(faint, led_by("daisy")) and not escalate(faint, None)
    assert escalate(detections(0.5), led_by("daisy")) and not escalate(detections(0.5 + LOWERED_BY), yawl)
    assert not escalate(detections(0.05, horse=0.9), led_by("daisy"))


def test_every_dev_photo_is_labelled_once():
    labels = Path(__file__).resolve().parent.parent / "bench/data/person_labels.csv"
    rows = list(csv.DictReader(line for line in labels.open() if not line.startswith("#")))
    names = [row["path"] for row in rows]
    assert len(names) == len(set(names)) == 535 and {row["person"] for row in rows} == {"0", "1"}
    on_disk = {p.relative_to(PHOTOS).as_posix() for p in PHOTOS.rglob("*")
               if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp")}
    assert set(names) == on_disk


def test_the_results_page_says_a_person_was_found_on_the_classifiers_evidence():
    from common.domain.jobs import JobRecord
    from common.domain.results import Counters, ImageResult, Label
    from common.domain.status import status_view
    from common.pages import render_file

    spec = JobSpec(("people",), "local")
    outcome = match_classes(spec, led_by("trombone", 0.99), detections(0.5))
    result = ImageResult("all/band.jpg", True, outcome.matched, (Label(index("trombone"), "trombone", 0.99),),
                         scores={"people": 0.0}, copies=("people/band.jpg",),
                         detections={c: d.to_dict() for c, d in outcome.detections.items()})
    view = status_view(JobRecord("a" * 32, spec, 1, "2026-01-01T00:00:00+00:00"), Counters())
    shown = render_file(view, [result], "html", lambda name, box: None)[1]
    assert "detector: person 0.50 ≥ 0.45 with playing: trombone 0.99" in shown
    assert "here by a correction" not in shown
