import numpy as np

from common.jobs import JobSpec
from common.labels import imagenet_classes
from common.matching import match_classes, top_labels

TABBY, EGYPTIAN_CAT, MACAW, TRAILER_TRUCK, CARTON = 281, 285, 88, 867, 478


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


def test_label_match_is_case_insensitive_and_accepts_synonyms():
    spec = JobSpec(("TABBY", "Egyptian Cat", "macaw", "dog"), "images", top_k=3)
    matched, _ = match_classes(spec, probs(i281=0.5, i285=0.3, i88=0.1))
    assert matched == ("TABBY", "Egyptian Cat", "macaw")


def test_label_outside_top_k_or_below_min_score_does_not_match():
    vector = probs(i281=0.5, i285=0.3, i88=0.1)
    assert match_classes(JobSpec(("macaw",), "images", top_k=2), vector)[0] == ()
    assert match_classes(JobSpec(("tabby", "macaw"), "images", top_k=5, min_score=0.2), vector)[0] == ("tabby",)


def test_one_image_can_match_several_classes():
    matched, _ = match_classes(JobSpec(("tabby", "Egyptian cat"), "images"), probs(i281=0.5, i285=0.4))
    assert matched == ("tabby", "Egyptian cat")


def test_substring_mode_reproduces_the_old_rule_including_its_false_hits():
    spec = JobSpec(("car", "truck"), "images", match="substring")
    matched, _ = match_classes(spec, probs(i478=0.9))  # "carton" contains "car"
    assert matched == ("car",)
