"""Classify once, sort many times (issue 11): stored predictions answer any class, threshold and match mode exactly
as a fresh run; dry runs change nothing; undo removes exactly what a job wrote. Real photos, the real MobileNetV2
LiteRT model, the embedded adapters."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from common import bootstrap
from common.adapters.local import InProcessQueue, SqlitePredictionStore
from common.bootstrap.ports import Inference
from common.config import Settings
from common.domain.options import Backend, Model, Runtime
from common.domain.status import JobView
from common.inference.classifier import ModelConfig, model_fingerprint
from common.inference.decoding import decode_image
from common.inference.loader import load_classifier
from tests.conftest import MOBILENET_TFLITE

CONFIG = ModelConfig(Model.MOBILENET_V2, str(MOBILENET_TFLITE), Runtime.LITERT)
IMGCLASSIFY = str(Path(sys.executable).with_name("imgclassify"))


class CountingModel:
    """The real classifier, counted; or none at all (`allowed=False`: any call fails the test)."""

    def __init__(self, allowed: bool = True) -> None:
        self.allowed, self.calls = allowed, 0

    def __call__(self):
        assert self.allowed, "the model was loaded although every photo was known"
        self.calls += 1
        return load_classifier(CONFIG)


class Folder:
    """The folder's application as the CLI builds it (the composition root, the embedded queue delivering in
    batches), with the real model counted."""

    def __init__(self, root: Path, model: CountingModel, model_key: str | None = None) -> None:
        self.root = root
        settings = Settings(backend=Backend.LOCAL, local_root=str(root), bucket="local")
        self.predictions = SqlitePredictionStore(root / ".imgclassify/jobs.sqlite3")
        # One worker: Keras batches concurrent deliveries, and a batch's floats differ in the last bits from a
        # single image's, which can flip a score sitting on a threshold between a stored and a fresh run.
        self.queue = InProcessQueue(workers=1)
        inference = Inference(classifier=model, model_key=model_key or model_fingerprint(CONFIG), decode=decode_image,
                              detector=None, detector_key=None)
        ports = dataclasses.replace(bootstrap.local_ports(settings, self.queue), predictions=self.predictions,
                                    corrections=self.predictions, inference=inference)
        self.app = bootstrap.local_app(settings, ports=ports, queue=self.queue)
        self.jobs = self.app.ports.jobs
        self.undo = self.app.undo_job

    def run(self, **body) -> JobView:
        job = self.app.create_job(body)
        assert self.app.wait(timeout=120)
        return self.app.job_status(job.id)

    def results(self, job_id: str) -> dict:
        return {r.name: r for r in self.jobs.results(job_id)}


@pytest.fixture
def photos(tmp_path, shared) -> Path:
    root = tmp_path / "dir"
    (root / "all").mkdir(parents=True)
    for source in sorted((shared / "photos/imagenet-dev").iterdir())[::12]:  # 26 photos of varied classes
        shutil.copy(source, root / "all" / source.name)
    for name in ("hot_dog.jpg", "parrot.jpg", "cat.bmp", "grace_hopper.bmp"):
        shutil.copy(shared / "photos/coral" / name, root / "all" / name)
    return root


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and ".imgclassify" not in p.parts}


def folders(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir() and ".imgclassify" not in p.parts}


QUESTIONS = [
    {"classes": ["dog", "bird", "food", "person", "musical instrument"]},
    {"classes": ["terrier", "parrot", "hotdog", "car"], "min_score": 0.2},
    {"classes": ["macaw", "hotdog", "tabby", "golden retriever"], "match": "label", "top_k": 5},
    {"classes": ["dog", "cat", "car"], "match": "substring"},
]


@pytest.mark.parametrize("question", QUESTIONS, ids=["hierarchy", "hierarchy-low", "label", "substring"])
def test_stored_predictions_answer_exactly_as_a_fresh_run(tmp_path, photos, question):
    fresh_root = tmp_path / "fresh"
    shutil.copytree(photos, fresh_root)
    fresh = Folder(fresh_root, CountingModel())
    warm = Folder(photos, CountingModel())
    warm.run(classes=["animal"], dry_run=True)  # fills the store with every photo's prediction

    never = Folder(photos, CountingModel(allowed=False))
    stored_view, fresh_view = never.run(**question), fresh.run(**question)

    assert stored_view.counters.from_store == stored_view.number_of_files == 30 and fresh_view.counters.from_store == 0
    assert stored_view.matches == fresh_view.matches
    stored, computed = never.results(stored_view.id), fresh.results(fresh_view.id)
    for name, result in computed.items():
        assert (stored[name].matched, stored[name].labels, stored[name].scores) == (
            result.matched, result.labels, result.scores), name
    assert tree(photos) == {k: v for k, v in tree(fresh_root).items()}


def test_another_model_builds_predictions_are_never_used(photos):
    Folder(photos, CountingModel()).run(classes=["dog"], dry_run=True)
    other = CountingModel()
    view = Folder(photos, other, model_key="mobilenet_v2/litert/another-build/0000/p1").run(classes=["dog"])
    assert view.counters.from_store == 0 and other.calls == 30


def test_a_changed_photo_is_classified_again_and_a_corrupt_entry_is_recomputed_and_counted(photos, shared):
    first = Folder(photos, CountingModel())
    first.run(classes=["dog"], dry_run=True)
    shutil.copy(shared / "photos/coral/bird.bmp", photos / "all/parrot.jpg")  # same name, new bytes
    with first.predictions._lock:  # noqa: SLF001 - damage one stored entry, as a bad disk would
        first.predictions._db.execute(  # noqa: SLF001
            "UPDATE predictions SET prediction = substr(prediction, 1, 40) WHERE rowid = "
            "(SELECT MIN(rowid) FROM predictions)")

    model = CountingModel()
    view = Folder(photos, model).run(classes=["bird"])

    assert view.complete and view.counters.failed == 0
    assert model.calls == 2 and view.counters.from_store == 28 and view.counters.recomputed == 1


def test_a_dry_run_changes_nothing_and_reports_what_the_real_run_then_does(photos):
    (photos / "dog").mkdir()
    (photos / "dog/mine.txt").write_text("my notes")
    before, dirs = tree(photos), folders(photos)
    folder = Folder(photos, CountingModel())

    dry = folder.run(classes=["dog", "bird", "food"], dry_run=True)

    assert tree(photos) == before and folders(photos) == dirs
    assert dry.job.spec.dry_run is True and sum(dry.matches.values()) > 0
    real = folder.run(classes=["dog", "bird", "food"])
    assert real.matches == dry.matches and real.counters.from_store == 30
    dry_results, real_results = folder.results(dry.id), folder.results(real.id)
    assert {n: r.matched for n, r in dry_results.items()} == {n: r.matched for n, r in real_results.items()}
    assert all(not r.written for r in dry_results.values())


def test_run_then_undo_leaves_the_folder_as_it_was_and_never_removes_a_users_file(photos):
    (photos / "dog").mkdir()
    (photos / "dog/mine.txt").write_text("my notes")
    before, dirs = tree(photos), folders(photos)
    folder = Folder(photos, CountingModel())
    job = folder.run(classes=["dog", "bird", "food", "cat"])
    written = [n for r in folder.results(job.id).values() for n in r.written]
    assert len(written) == sum(job.matches.values()) > 3

    report = folder.undo(job.id)

    assert (report["removed"], report["missing"], report["kept"]) == (len(written), 0, [])
    assert tree(photos) == before and folders(photos) == dirs  # empty class folders went too; dog/ stayed


def test_undo_keeps_and_reports_a_copy_changed_since(photos):
    folder = Folder(photos, CountingModel())
    job = folder.run(classes=["food"])
    [changed, *rest] = [n for r in folder.results(job.id).values() for n in r.written]
    (photos / changed).write_bytes(b"edited by the user")

    report = folder.undo(job.id)

    assert report["kept"] == [{"name": changed, "reason": "changed or replaced since the job wrote it: kept"}]
    assert report["removed"] == len(rest) and (photos / changed).read_bytes() == b"edited by the user"


def imgclassify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IMGCLASSIFY, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_the_cli_reruns_say_nothing_new_try_dry_runs_list_jobs_and_undo(photos):
    model = ("--model", "mobilenet_v2", "--weights", str(MOBILENET_TFLITE))
    first = imgclassify("run", str(photos), "--classes", "dog", "bird", *model)
    again = imgclassify("run", str(photos), "--classes", "dog", "bird", *model)
    dry = imgclassify("run", str(photos), "--classes", "terrier", *model, "--dry-run", "--json")
    listed = imgclassify("jobs", str(photos))
    undone = imgclassify("undo", str(photos))  # the latest job that made copies (the dry run made none), named
    first_id = json.loads(imgclassify("jobs", str(photos), "--json").stdout)[0]["id"]
    undone_first = imgclassify("undo", str(photos), first_id)

    assert first.returncode == again.returncode == dry.returncode == 0, first.stderr + again.stderr + dry.stderr
    assert "predictions: 0 from the store, 30 from the model" in first.stdout
    assert "predictions: 30 from the store, 0 from the model; 0 new copies — nothing new" in again.stdout
    assert json.loads(dry.stdout)["from_store"] == 30 and not (photos / "terrier").exists()
    assert len(listed.stdout.splitlines()) == 4 and "(dry run)" in listed.stdout
    assert "the latest that made copies" in undone.stdout and "was a dry run" in undone.stdout
    assert undone.returncode == 0 and "removed 0 copies" not in undone.stdout
    assert undone_first.returncode == 0 and "removed 0 copies" in undone_first.stdout  # it owns none any more
    assert not (photos / "dog").exists() and not (photos / "bird").exists()


@pytest.mark.slow
def test_a_run_over_known_photos_never_imports_a_model_runtime(photos):
    Folder(photos, CountingModel()).run(classes=["dog"], dry_run=True)
    script = (f"import sys; from imgclassify.cli import main; code = main(['run', {str(photos)!r}, '--classes', "
              f"'bird', '--model', 'mobilenet_v2', '--weights', {str(MOBILENET_TFLITE)!r}, '--json']); "
              "print(sorted(m for m in ('tensorflow', 'keras', 'ai_edge_litert') if m in sys.modules)); "
              "sys.exit(code)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
