import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common.domain.jobs import HIERARCHY_MIN_SCORE, JobSpec
from common.domain.labels import imagenet_classes
from common.domain.matching import match_classes, match_many, top_labels
from common.domain.taxonomy import UnknownClass, load_taxonomy, resolve

TABBY, EGYPTIAN_CAT, MACAW, TRAILER_TRUCK, CARTON, GOLDEN_RETRIEVER, BEAGLE = 281, 285, 88, 867, 478, 207, 162
FIRE_ENGINE, GRAND_PIANO, HOTDOG = 555, 579, 934


def probs(**scores: float) -> np.ndarray:
    vector = np.zeros(1000, dtype=np.float32)
    for index, score in scores.items():
        vector[int(index.removeprefix("i"))] = score
    return vector


def test_class_index_is_complete_and_ordered():
    classes = imagenet_classes()
    assert len(classes) == 1000 and [c.index for c in classes] == list(range(1000))
    assert classes[TABBY].wnid == "n02123045"


def test_top_labels_are_sorted_by_score():
    labels = top_labels(probs(i281=0.2, i88=0.7, i867=0.1), 3)
    assert [label.index for label in labels] == [MACAW, TABBY, TRAILER_TRUCK]


# --- resolution -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query, synset", [
    ("trucks", "truck.n.01"),          # plural
    ("Dogs", "dog.n.01"),              # case and plural
    ("DOG", "dog.n.01"),
    ("musical instrument", "musical_instrument.n.01"),   # multi-word
    ("musical instruments", "musical_instrument.n.01"),  # multi-word plural
    ("musical-instrument", "musical_instrument.n.01"),
    ("automobile", "car.n.01"),        # lemma synonym
    ("autos", "car.n.01"),
    ("people", "person.n.01"),         # irregular plural
    ("mice", "mouse.n.04"),            # noun.exc; the only sense with an ImageNet class is the computer mouse
    ("hotdog", "hotdog.n.02"),         # first sense with ImageNet descendants (hotdog.n.01 is a show-off)
    ("dog.n.01", "dog.n.01"),          # explicit synset
])
def test_queries_resolve_to_synsets(query, synset):
    assert resolve(query).synsets == (synset,)


def test_dog_covers_every_breed():
    dog = resolve("dog")
    assert len(dog.classes) == 118 and {GOLDEN_RETRIEVER, BEAGLE} <= dog.classes and TABBY not in dog.classes
    assert dog.warning is None


def test_weak_classes_warn_and_precise_classes_do_not():
    assert "covers only 3 ImageNet classes" in resolve("person").warning
    assert "scuba diver" in resolve("person").warning
    assert resolve("tabby").warning is None  # names one ImageNet class exactly: precise, not weak
    nothing = resolve("democracy")
    assert nothing.classes == frozenset() and "finds nothing by itself" in nothing.warning
    assert "--examples democracy=FOLDER" in nothing.warning


def test_unknown_words_are_400_with_suggestions():
    with pytest.raises(UnknownClass) as caught:
        load_taxonomy().resolve("dgo", 2)
    body = caught.value.to_json()
    assert body["field"] == "classes" and "classes[2] 'dgo'" in body["message"]
    assert "dingo" in body["suggestions"]


# --- hierarchy matching -----------------------------------------------------------------------------------------

def test_probability_mass_over_descendants_decides():
    # No single dog breed is confident, but together they are: a dog.
    vector = probs(i207=0.2, i162=0.2, i281=0.15)
    outcome = match_classes(JobSpec(("dog", "cat"), "images", min_score=0.3), vector)
    assert outcome.matched == ("dog",)
    assert outcome.scores["dog"] == pytest.approx(0.4) and outcome.scores["cat"] == pytest.approx(0.15)


def test_multi_label_stays():
    outcome = match_classes(JobSpec(("dog", "vehicle", "truck"), "images"), probs(i207=0.45, i555=0.45))
    assert outcome.matched == ("dog", "vehicle", "truck")


def test_min_score_is_inclusive_and_zero_mass_never_matches():
    vector = probs(i579=0.3)
    assert match_classes(JobSpec(("musical instrument",), "images", min_score=0.3), vector).matched == (
        "musical instrument",)
    assert match_classes(JobSpec(("musical instrument",), "images", min_score=0.31), vector).matched == ()
    assert match_classes(JobSpec(("democracy",), "images", min_score=0.0), vector).matched == ()


def test_default_threshold_is_the_tuned_one():
    assert JobSpec(("dog",), "images").min_score == HIERARCHY_MIN_SCORE


# --- label and substring rules ----------------------------------------------------------------------------------

def test_label_match_is_case_insensitive_and_accepts_synonyms():
    spec = JobSpec(("TABBY", "Egyptian Cat", "macaw", "dog"), "images", top_k=3, min_score=0.0, match="label")
    assert match_classes(spec, probs(i281=0.5, i285=0.3, i88=0.1)).matched == ("TABBY", "Egyptian Cat", "macaw")


def test_label_outside_top_k_or_below_min_score_does_not_match():
    vector = probs(i281=0.5, i285=0.3, i88=0.1)
    assert match_classes(JobSpec(("macaw",), "images", top_k=2, min_score=0, match="label"), vector).matched == ()
    spec = JobSpec(("tabby", "macaw"), "images", top_k=5, min_score=0.2, match="label")
    assert match_classes(spec, vector).matched == ("tabby",)


def test_substring_mode_reproduces_the_old_rule_including_its_false_hits():
    spec = JobSpec(("car", "truck", "trucks", "dog"), "images", match="substring", min_score=0.0)
    # "carton" contains "car"; "trailer_truck" contains "truck" but never "trucks"; no label says "dog".
    outcome = match_classes(spec, probs(i478=0.5, i867=0.3, i207=0.2))
    assert outcome.matched == ("car", "truck")


def test_substring_rule_uses_the_keras_label_names():
    # Spot checks against Keras' imagenet_class_index.json, whose names the old service matched on.
    keras = {134: "crane", 517: "crane", 707: "pay-phone", 836: "sunglass", 850: "teddy", 867: "trailer_truck",
             906: "Windsor_tie", 934: "hotdog", 986: "yellow_lady's_slipper", 996: "hen-of-the-woods"}
    classes = imagenet_classes()
    assert {i: classes[i].keras_name for i in keras} == keras


# --- words people use -------------------------------------------------------------------------------------------

def test_an_everyday_word_that_covers_nothing_points_to_what_would_work():
    from common.domain.options import MatchMode
    from common.domain.taxonomy import describe_resolution

    warnings = describe_resolution(("pets", "kids", "beach", "sunset", "wedding", "documents"),
                                   MatchMode.HIERARCHY)["warnings"]
    said = dict(zip(("pets", "kids", "beach", "sunset", "wedding", "documents"), warnings, strict=True))
    assert "ask for dogs and cats instead" in said["pets"] and "--examples pets=FOLDER" in said["pets"]
    assert "ask for people instead" in said["kids"] and "seashore" in said["beach"]
    assert "--examples sunset=FOLDER" in said["sunset"] and "people" in said["wedding"]
    assert "menu" in said["documents"]


def test_every_unknown_word_of_a_request_is_named_at_once():
    from common.domain.options import MatchMode
    from common.domain.taxonomy import describe_resolution

    with pytest.raises(UnknownClass) as caught:
        describe_resolution(("selfies", "dogs", "dgo", "glorp"), MatchMode.HIERARCHY)
    message = caught.value.message
    assert "classes[0] 'selfies'" in message and "classes[2] 'dgo'" in message and "classes[3] 'glorp'" in message
    assert "dingo" in message and "--examples selfies=FOLDER" in message
    with pytest.raises(UnknownClass) as alone:
        describe_resolution(("selfies",), MatchMode.HIERARCHY)
    assert alone.value.to_json()["suggestions"] == ["people"]  # not shellfish or damselfish


def test_the_form_suggests_people_the_detectors_classes_and_the_taught_classes_first():
    from common.domain.jobs import JobRecord, JobSpec
    from common.domain.results import Counters
    from common.domain.status import status_view
    from common.domain.taxonomy import class_vocabulary
    from common.pages import FrontPage, render_index

    words = class_vocabulary()
    assert words[0] == "people" and {"horse", "giraffe", "teddy bear"} <= set(words[:120])
    taught = status_view(JobRecord("c" * 32, JobSpec(("roses",), "local", examples=(("roses", "examples/r/"),)), 1,
                                   "2026-01-01T00:00:00+00:00"), Counters())
    page = render_index(FrontPage([(taught, None)], ("receipts",)), words, "/classification-job")
    listed = page.split('id="vocabulary-words">', 1)[1]
    assert listed.index('"receipts"') < listed.index('"roses"') < listed.index('"people"')


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 40), sparse=st.booleans(),
       match=st.sampled_from(["hierarchy", "label", "substring"]), top_k=st.integers(1, 10),
       min_score=st.sampled_from([0.0, 0.05, 0.2, 0.35, 0.5]),
       classes=st.lists(st.sampled_from(["dog", "cat", "bird", "tabby", "macaw", "vehicle", "food", "terrier",
                                         "musical instrument", "golden retriever"]), min_size=1, max_size=4,
                        unique=True))
def test_a_photo_matched_among_many_is_matched_as_alone(seed, rows, sparse, match, top_k, min_score, classes):
    """The batched rule (a delivery's stored answers, one matrix) decides each photo exactly as the rule for one
    photo does: the same labels, scores and classes, for dense vectors (a float model) and sparse ones (int8:
    hundreds of exact zeros, where a selection has ties to break)."""
    rng = np.random.default_rng(seed)
    matrix = rng.dirichlet(np.full(1000, 0.05), size=rows).astype(np.float32)
    if sparse:
        matrix = np.where(matrix > 0.004, np.round(matrix * 235) / 235, 0).astype(np.float32)
    spec = JobSpec(tuple(classes), "images", top_k=top_k, min_score=min_score, match=match)
    assert match_many(spec, matrix) == [match_classes(spec, row) for row in matrix]
