"""People, horses and COCO's other classes by name (issue 19): the object detector built from its pinned package,
run on real photos, through `imgclassify run` and on the emulated pipeline."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from common.domain.detections import best_detection, coco_names
from common.domain.jobs import JobSpec
from common.domain.matching import match_classes
from common.domain.taxonomy import needs_detector, resolve
from common.domain.options import MatchMode
from tests.conftest import MOBILENET_TFLITE, PHOTOS
from tests.test_cli import imgclassify

PEOPLE = ["coral/grace_hopper.bmp", "coral/face.jpg", "coral/squat.bmp", "coral/kite_and_cold.jpg",
          "skimage/astronaut.png", "skimage/camera.png"]
NOT_PEOPLE = ["coral/bird.bmp", "coral/parrot.jpg", "coral/hot_dog.jpg", "coral/cat.bmp", "skimage/coffee.png",
              "coral/imprinting_dog_test_0.bmp"]


def test_people_horses_cows_and_giraffes_resolve_to_the_detectors_classes_too():
    assert {coco_names()[i] for i in resolve("people").detector_classes} == {"person"}
    assert {coco_names()[i] for i in resolve("horses").detector_classes} == {"horse"}
    assert {coco_names()[i] for i in resolve("cows").detector_classes} == {"cow"}
    assert not resolve("giraffes").classes and resolve("giraffes").detector_classes  # ImageNet has none
    assert {"horse", "cow", "dog", "cat", "bird"} <= {coco_names()[i] for i in resolve("animals").detector_classes}
    assert {"car", "truck", "bicycle"} <= {coco_names()[i] for i in resolve("vehicles").detector_classes}
    assert needs_detector(("dogs", "people"), MatchMode.HIERARCHY)
    assert not needs_detector(("dogs",), MatchMode.HIERARCHY)
    assert not needs_detector(("people",), MatchMode.LABEL)


def test_a_class_matches_on_the_detectors_score_or_the_classifiers_mass():
    probabilities = np.full(1000, 1 / 1000, dtype=np.float32)
    detections = np.zeros((80, 5), dtype=np.float32)
    person = coco_names().index("person")
    detections[person] = (0.83, 0.1, 0.2, 0.5, 0.9)
    spec = JobSpec(("people", "dogs"), "b")
    outcome = match_classes(spec, probabilities, detections)
    assert outcome.matched == ("people",) and outcome.detections["people"].box == pytest.approx((0.1, 0.2, 0.5, 0.9))
    assert match_classes(JobSpec(("people",), "b", detector_min_score=0.9), probabilities, detections).matched == ()
    assert best_detection("people", detections).label == "person"


@pytest.fixture(scope="session")
def detector(model_cache):
    from imgclassify.detector_build import cached_detector, ensure_detector

    artifact = ensure_detector()  # built from the pinned package (by this fixture or an earlier CLI test), cached
    rebuilt: list[bool] = []
    assert cached_detector() == artifact and ensure_detector(on_build=lambda: rebuilt.append(True)) == artifact
    assert rebuilt == []
    return artifact


@pytest.mark.slow
def test_the_detector_finds_the_people_in_real_photos_and_not_elsewhere(detector):
    from common.inference.decoding import decode_image
    from common.inference.detector import LiteRTDetector

    run = LiteRTDetector(str(detector))
    person = coco_names().index("person")
    scores = {name: float(run.detect(decode_image((PHOTOS / name).read_bytes(), 416))[person, 0])
              for name in PEOPLE + NOT_PEOPLE}
    assert min(scores[n] for n in PEOPLE) >= 0.65 > max(scores[n] for n in NOT_PEOPLE), scores
    box = run.detect(decode_image((PHOTOS / "coral/grace_hopper.bmp").read_bytes(), 416))[person, 1:]
    assert box[0] < 0.3 and box[2] > 0.7 and box[1] < 0.2  # she fills the frame


@pytest.mark.slow
def test_run_sorts_people_by_name_and_a_second_question_runs_no_model(detector, tmp_path, monkeypatch):
    monkeypatch.setenv("DETECTOR_MODEL", str(detector))
    root = tmp_path / "photos"
    (root / "all").mkdir(parents=True)
    for name in PEOPLE + NOT_PEOPLE:
        shutil.copy(PHOTOS / name, root / "all" / Path(name).name)
    args = ("--classes", "people", "dogs", "--model", "mobilenet_v2", "--weights", str(MOBILENET_TFLITE), "--json")
    first = imgclassify("run", str(root), *args)
    assert first.returncode == 0, first.stderr
    view = json.loads(first.stdout)
    assert sorted(p.name for p in (root / "people").iterdir()) == sorted(Path(n).name for n in PEOPLE)
    assert "detector: person" in view["resolved"]["people"][0] and not view["warnings"]

    again = imgclassify("run", str(root), *args[:-1], "--dry-run", "--json")  # a new job over known photos
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["from_store"] == second["processed"] == len(PEOPLE + NOT_PEOPLE)  # classifier and detector stored
    assert second["matches"]["people"] == len(PEOPLE)

    report = imgclassify("report", str(root), view["id"], "--out", "-")
    assert report.stdout.count('data-detected="person"') == len(PEOPLE)


@pytest.mark.emulator
@pytest.mark.slow
def test_the_emulated_pipeline_sorts_people_with_the_detector(emulators, detector):
    from common.adapters.gcp import GcsObjectStore, storage_client
    from imgclassify.local_stack import LocalStack

    stack = LocalStack(emulators, bucket="people-bucket", topic="classify-people", subscription="classify-people-push",
                       function_env={"MODEL": "mobilenet_v2", "MODEL_WEIGHTS": str(MOBILENET_TFLITE),
                                     "DETECTOR_MODEL": str(detector)})
    stack.start()
    try:
        store = GcsObjectStore(storage_client(emulators.project))
        for name in PEOPLE + NOT_PEOPLE:
            store.write(stack.bucket, f"all/{Path(name).name}", (PHOTOS / name).read_bytes())
        job = requests.post(f"{stack.gateway_url}/classification-job", json={"classes": ["people"]}, timeout=60).json()
        deadline = time.monotonic() + 180
        while not (status := requests.get(job["status_url"], timeout=10).json())["complete"]:
            assert time.monotonic() < deadline, status
            time.sleep(0.3)
        copied = sorted(n.split("/", 1)[1] for n in store.list_names(stack.bucket, "people/"))
        assert copied == sorted(Path(n).name for n in PEOPLE) and status["matches"]["people"] == len(PEOPLE)
        assert "detector: person" in status["resolved"]["people"][0]
    finally:
        stack.stop()


def test_detector_builds_are_named_by_their_input_sizes_and_bad_sizes_are_refused():
    from common.domain.errors import ConfigurationError
    from imgclassify.detector_build import ARTIFACT, CASCADE, artifact_name

    assert artifact_name((416,)) == ARTIFACT  # the single full pass keeps its name (caches, deploy.sh)
    assert artifact_name() == artifact_name(CASCADE) != ARTIFACT and "-256-416-" in artifact_name()
    for sizes in ((300,), (64,), (448,), (416, 256), (256, 256)):
        with pytest.raises(ConfigurationError):
            artifact_name(sizes)


@pytest.mark.slow
def test_the_cascade_answers_as_the_full_pass_where_it_ran_it_and_as_the_small_one_elsewhere(detector):
    from common.domain.people import escalate
    from common.inference.decoding import decode_image
    from common.inference.detector import LiteRTDetector
    from common.usecases.photo_vectors import StageTimer, detected
    from imgclassify.detector_build import ensure_detector

    cascade = LiteRTDetector(str(detector))
    full, small = (LiteRTDetector(str(ensure_detector(sizes=(size,)))) for size in (416, 256))
    assert cascade.sizes == (256, 416) and full.sizes == (416,) and small.size == 256
    ran_full = 0
    for name in PEOPLE + NOT_PEOPLE:
        data = (PHOTOS / name).read_bytes()
        first = small.detect(decode_image(data))  # what the classifier saw (224), scaled up to the small pass's 256
        before = cascade.passes[416]
        answer = detected(cascade, decode_image, data, None, StageTimer())
        escalated = cascade.passes[416] > before
        assert escalated == escalate(first, None), name
        if escalated:  # the full pass of the cascade preprocesses in its graph, the older build in NumPy
            np.testing.assert_allclose(answer[:, 0], full.detect(decode_image(data, 416))[:, 0], atol=0.03)
        else:  # the small pass of the cascade is the 256 build itself
            np.testing.assert_allclose(answer, first, atol=1e-5)
        ran_full += escalated
    assert cascade.passes[256] == len(PEOPLE + NOT_PEOPLE) and cascade.passes[416] == ran_full
