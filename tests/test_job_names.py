"""Naming jobs as a newcomer does (issue 23): the latest job not undone yet for undo, undone jobs said in the
folder's list, shortened ids; on real files with the embedded use cases."""
from __future__ import annotations

from tests.test_real_folders import Folder, put


def test_undo_without_an_id_takes_the_latest_job_not_undone_yet(tmp_path):
    folder = Folder(tmp_path)
    put(tmp_path / "all/a.jpg")
    older = folder.run(["cat"])
    newer = folder.run(["tabby"])
    app = folder.app

    first = app.undo_job(app.pick_job(None, not_undone=True))
    second = app.undo_job(app.pick_job(None, not_undone=True))

    assert (first["id"], first["removed"]) == (newer.id, 1)
    assert (second["id"], second["removed"]) == (older.id, 1)
    assert not (tmp_path / "cat").exists() and not (tmp_path / "tabby").exists()
    listed = {job.view.id: job.undone_at for job in app.list_jobs()}
    assert all(listed[i] for i in (older.id, newer.id))


def test_a_shortened_id_names_the_job_everywhere_a_job_is_named(tmp_path):
    folder = Folder(tmp_path)
    put(tmp_path / "all/a.jpg")
    job = folder.run(["cat"])
    app = folder.app
    short = job.id[:8]
    assert app.job_status(short).id == job.id
    assert app.report(short).view.id == job.id
    assert app.undo_job(short)["id"] == job.id


def test_a_keras_weights_file_names_its_model_and_a_wrong_model_is_one_line(tmp_path, shared):
    import argparse

    import pytest

    from common.domain.options import Model
    from imgclassify.cli.model import check_model_options
    from imgclassify.cli.options import UsageError
    from tests.conftest import MOBILENET_H5

    left_out = argparse.Namespace(model=None, weights=str(MOBILENET_H5), runtime=None, workers=2)
    check_model_options(left_out, tmp_path)
    assert left_out.model == Model.MOBILENET_V2
    wrong = argparse.Namespace(model="resnet50", weights=str(MOBILENET_H5), runtime=None, workers=2)
    with pytest.raises(UsageError, match="--model mobilenet_v2"):
        check_model_options(wrong, tmp_path)


def test_a_tflite_file_names_its_model_too(tmp_path):
    import argparse

    from common.domain.options import Model
    from imgclassify.cli.model import check_model_options
    from tests.conftest import MOBILENET_TFLITE

    left_out = argparse.Namespace(model=None, weights=str(MOBILENET_TFLITE), runtime=None, workers=2)
    check_model_options(left_out, tmp_path)  # Google's own export: its tensors say MobileNetV2
    assert left_out.model == Model.MOBILENET_V2
    named = argparse.Namespace(model="resnet50", weights=str(MOBILENET_TFLITE), runtime=None, workers=2)
    check_model_options(named, tmp_path)  # named: the file is not opened (a run over known photos loads nothing)
    assert named.model == Model.RESNET50
    import pytest

    from common.domain.errors import ConfigurationError
    from common.inference.litert import LiteRTClassifier

    with pytest.raises(ConfigurationError, match="pass --model mobilenet_v2"):  # ...but said when it loads
        LiteRTClassifier(Model.RESNET50, str(MOBILENET_TFLITE))


def test_a_folder_remembers_how_it_was_sorted_and_a_flag_given_again_wins(tmp_path, monkeypatch):
    import argparse

    from imgclassify.cli.remembered import fill_in, remember, remembered

    monkeypatch.delenv("MODEL", raising=False)
    first = argparse.Namespace(model="mobilenet_v2", weights="none", runtime="keras")
    remember(first, tmp_path)
    later = argparse.Namespace(model=None, weights=None, runtime=None)
    assert fill_in(later, tmp_path) == {}
    assert (later.model, later.weights, later.runtime) == ("mobilenet_v2", "none", "keras")
    again = argparse.Namespace(model="resnet50", weights=None, runtime=None)
    assert fill_in(again, tmp_path) == {"model": "resnet50"} and again.model == "resnet50"
    remember(again, tmp_path)
    assert remembered(tmp_path)["model"] == "resnet50"


def test_the_thresholds_are_remembered_too_and_the_environment_fills_what_is_not(tmp_path, monkeypatch):
    import argparse
    import json

    from imgclassify.cli.remembered import THRESHOLDS, fill_in, remember, remembered, settings_file

    monkeypatch.setenv("DEFAULT_TOP_K", "7")
    monkeypatch.delenv("DEFAULT_MIN_SCORE", raising=False)
    fresh = argparse.Namespace(top_k=None, min_score=None)
    fill_in(fresh, tmp_path, THRESHOLDS)
    assert (fresh.top_k, fresh.min_score) == (7, None)  # None: the match rule's own tuned value
    remember(argparse.Namespace(model="mobilenet_v2", weights="none", runtime="auto", top_k=3, min_score=0.5),
             tmp_path)
    later = argparse.Namespace(top_k=None, min_score=None)
    fill_in(later, tmp_path, THRESHOLDS)
    assert (later.top_k, later.min_score) == (3, 0.5)
    changed = argparse.Namespace(top_k=None, min_score=0.2)
    fill_in(changed, tmp_path, THRESHOLDS)
    remember(changed, tmp_path)  # a command with only the thresholds keeps the model options it did not touch
    assert remembered(tmp_path) == {"model": "mobilenet_v2", "weights": "none", "runtime": "auto", "top_k": 3,
                                    "min_score": 0.2}
    settings_file(tmp_path).write_text(json.dumps({"top_k": "many", "model": "resnet50"}))  # edited by hand
    edited = argparse.Namespace(top_k=None, model=None)
    fill_in(edited, tmp_path)
    assert (edited.top_k, edited.model) == (7, "resnet50")


def test_a_dry_run_says_per_photo_what_would_be_copied_where():
    from common.domain.results import ImageResult
    from imgclassify.cli.output import plan_lines, planned_copies

    plan = planned_copies([ImageResult("all/pets/a.jpg", True, ("cats", "pets")), ImageResult("all/b.jpg", True),
                           ImageResult("all/c.txt", False, reason="not a recognised image format")], "all/")
    assert plan == [{"photo": "b.jpg", "to": []},
                    {"photo": "c.txt", "to": [], "failed": "not a recognised image format"},
                    {"photo": "pets/a.jpg", "to": ["cats/pets/a.jpg", "pets/pets/a.jpg"]}]
    assert plan_lines(plan).splitlines()[2] == "  pets/a.jpg -> cats/pets/a.jpg, pets/pets/a.jpg"


def test_the_finished_progress_line_says_how_long_it_took():
    import io

    from imgclassify.cli.output import Progress
    from tests.fakes import fake_app

    app = fake_app()
    app.objects.write("images", "all/a.jpg", b"x")
    view = app.create_job({"classes": ["dog"]})
    for message in app.publisher.messages:
        app.classify_image(message)
    stream = io.StringIO()
    Progress(True, stream).show(app.job_status(view.id))
    assert "done in" in stream.getvalue() and "ETA" not in stream.getvalue()
