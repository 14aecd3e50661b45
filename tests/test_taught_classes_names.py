"""One name for a photo everywhere, the job a command without an id takes, and corrections that say what they do
(issue 30). Fast: the fake app, and the CLI's helpers over plain records; one run of the CLI itself."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field

import pytest

from common.domain.jobs import JobRecord, JobSpec
from common.domain.results import Counters
from common.domain.status import JobView, status_view
from imgclassify.cli.output import latest_that_changed
from tests.conftest import MOBILENET_TFLITE
from tests.fakes import fake_app, served, solid_jpeg
from tests.test_cli import IMGCLASSIFY


def deliver_all(app) -> None:
    while app.publisher.messages:
        app.classify_image(app.publisher.messages.pop(0))


def sorted_app():
    app = fake_app()
    for number, (name, colour) in enumerate({"all/phone/r1.jpg": "red", "all/r2.jpg": "red",
                                             "all/b1.jpg": "blue"}.items()):
        app.objects.write("images", name, solid_jpeg(colour, (64 + number, 48)))
    client = served(app)
    job = client.post("/classification-job", json={"classes": ["tabby"]}).get_json()
    deliver_all(app)
    return app, client, job["id"]


def test_a_correction_names_a_photo_as_the_page_and_the_export_show_it_or_by_its_full_name():
    app, client, job_id = sorted_app()
    answer = client.post(f"/classification-job/{job_id}/corrections", json={"corrections": [
        {"name": "phone/r1.jpg", "class": "tabby", "belongs": False},
        {"name": "all/b1.jpg", "class": "tabby", "belongs": True}]})
    assert answer.status_code == 200, answer.get_json()
    done = answer.get_json()["corrections"]
    assert done[0]["name"] == "all/phone/r1.jpg" and done[0]["removed"] == ["tabby/phone/r1.jpg"]
    unknown = client.post(f"/classification-job/{job_id}/corrections", json={"corrections": [
        {"name": "phone/nope.jpg", "class": "tabby", "belongs": False}]})
    assert unknown.status_code == 400 and "'all/'" in unknown.get_json()["message"]


def test_kept_corrections_list_and_forget_a_photo_by_the_name_the_page_shows():
    app, client, job_id = sorted_app()
    client.post(f"/classification-job/{job_id}/corrections", json={"corrections": [
        {"name": "phone/r1.jpg", "class": "tabby", "belongs": False},
        {"name": "r2.jpg", "class": "tabby", "belongs": False}]})
    kept = app.kept_corrections
    assert sorted(row["shown"] for row in kept()) == ["phone/r1.jpg", "r2.jpg"]  # as the results page shows them
    assert sorted(row["photo"] for row in kept()) == ["all/phone/r1.jpg", "all/r2.jpg"]
    assert kept.forget("tabby", "phone/r1.jpg") == 1 and kept.forget("tabby", "all/r2.jpg") == 1
    assert kept() == []


@dataclass
class Kept:
    """A runner.KeptJob as the CLI reads it."""

    id: str
    dry_run: bool = False
    copies_made: int | None = 3
    undone_at: str | None = None
    view: JobView = field(init=False)

    def __post_init__(self) -> None:
        spec = JobSpec(("birds",), "local", dry_run=self.dry_run)
        self.view = status_view(JobRecord(self.id, spec, 1, "2026-01-01T00:00:00"), Counters(processed=1))


def test_undo_and_report_without_an_id_take_the_latest_job_that_made_copies_and_say_so():
    jobs = [Kept("a" * 32), Kept("b" * 32), Kept("c" * 32, dry_run=True, copies_made=0)]
    chosen, said = latest_that_changed(jobs, not_undone=True)
    assert chosen == "b" * 32 and "the latest that made copies" in said and "was a dry run" in said
    jobs[1].undone_at = "2026-01-02T00:00:00"
    assert latest_that_changed(jobs, not_undone=True)[0] == "a" * 32
    assert latest_that_changed([Kept("d" * 32, dry_run=True, copies_made=0)], not_undone=True) == (None, "")
    assert "the latest" in latest_that_changed([Kept("e" * 32)])[1]


@pytest.mark.slow
def test_run_with_examples_and_a_build_without_features_stops_before_sorting(tmp_path, shared):
    """The README's slim .tflite cannot learn examples: one line naming the fix, exit 2, nothing sorted."""
    (tmp_path / "dir/all").mkdir(parents=True)
    (tmp_path / "examples").mkdir()
    for name in ("cat_720p.jpg", "face.jpg"):
        shutil.copy(shared / "photos/coral" / name, tmp_path / "examples" / name)
    shutil.copy(shared / "photos/coral/bird.bmp", tmp_path / "dir/all/bird.bmp")
    ran = subprocess.run([IMGCLASSIFY, "run", str(tmp_path / "dir"), "--classes", "pets", "--examples",
                          f"pets={tmp_path / 'examples'}", "--model", "mobilenet_v2", "--weights",
                          str(MOBILENET_TFLITE)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "DETECTOR_MODEL": "none"})
    assert ran.returncode == 2 and "no features" in ran.stderr and ran.stderr.count("\n") == 1
    assert not (tmp_path / "dir/pets").exists()
