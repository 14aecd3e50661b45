"""Issue 28's findings, each replayed on the real folder and SQLite adapters (a fake model): ownership is state
(an undone job owns nothing), removal needs the very file a job wrote, the state folder is never followed through
a link, and a redelivery follows the corrections made since."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from common import bootstrap
from common.domain.errors import ConfigurationError, Conflict
from tests.fakes import solid_jpeg
from tests.test_real_folders import Folder, put, snapshot

RED = solid_jpeg("red")


def _sorted(tmp_path: Path, photos: int = 3) -> tuple[Folder, str]:
    for i in range(photos):
        put(tmp_path / f"all/{i}.jpg", solid_jpeg("red", size=(40 + i, 30)))
    folder = Folder(tmp_path)
    view = folder.run(["cat"])
    assert view.matches["cat"] == photos
    return folder, view.id


def test_a_second_undo_removes_nothing_even_where_the_user_put_the_same_bytes_back(tmp_path):
    folder, job_id = _sorted(tmp_path)
    first = folder.app.undo_job(job_id)
    assert first["removed"] == 3 and "already_undone" not in first
    put(tmp_path / "cat/0.jpg", (tmp_path / "all/0.jpg").read_bytes())  # the user's own copy, the job's old path

    again = folder.app.undo_job(job_id)

    assert again["removed"] == 0 and again["already_undone"]
    assert (tmp_path / "cat/0.jpg").read_bytes() == (tmp_path / "all/0.jpg").read_bytes()


def test_undo_keeps_a_file_the_user_put_in_place_of_the_jobs_copy_with_the_same_bytes(tmp_path):
    folder, job_id = _sorted(tmp_path, photos=1)
    copy = tmp_path / "cat/0.jpg"
    data = copy.read_bytes()
    copy.rename(tmp_path / "cat/mine.jpg")  # the job's copy, moved: the user's now
    copy.write_bytes(data)  # and the user's own file at the job's path

    undone = folder.app.undo_job(job_id)

    assert undone["removed"] == 0 and undone["kept"][0]["name"] == "cat/0.jpg"
    assert copy.read_bytes() == data and (tmp_path / "cat/mine.jpg").read_bytes() == data


def test_an_undone_job_cannot_be_corrected(tmp_path):
    folder, job_id = _sorted(tmp_path, photos=1)
    folder.app.undo_job(job_id)
    with pytest.raises(Conflict, match="undone"):
        folder.app.correct_job(job_id, {"corrections": [{"name": "all/0.jpg", "class": "cat", "belongs": False}]})
    with pytest.raises(Conflict, match="undone"):
        folder.app.correct_job(job_id, {"corrections": [{"name": "all/0.jpg", "class": "pets", "belongs": True}]})
    assert not (tmp_path / "pets").exists()


def test_concurrent_corrections_keep_every_copy_in_the_manifest_so_undo_removes_them_all(tmp_path):
    folder, job_id = _sorted(tmp_path, photos=1)
    classes = [f"album{i}" for i in range(24)]

    def add(name: str) -> None:
        folder.app.correct_job(job_id, {"corrections": [{"name": "all/0.jpg", "class": name, "belongs": True}]})

    threads = [threading.Thread(target=add, args=(c,)) for c in classes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(folder.jobs.result(job_id, "all/0.jpg").written) == sorted(["cat/0.jpg"] + [f"{c}/0.jpg"
                                                                                                for c in classes])
    assert folder.app.undo_job(job_id)["removed"] == 25
    assert sorted(snapshot(tmp_path)) == ["all/0.jpg"]


def test_a_redelivery_after_a_not_correction_does_not_bring_the_copy_back(tmp_path):
    folder, job_id = _sorted(tmp_path, photos=2)
    folder.app.correct_job(job_id, {"corrections": [{"name": "all/0.jpg", "class": "cat", "belongs": False}]})
    assert not (tmp_path / "cat/0.jpg").exists()
    message = next(m for m in _messages(folder, job_id) if m.name == "all/0.jpg")

    assert folder.classify(message) is None  # a duplicate: counted once

    assert not (tmp_path / "cat/0.jpg").exists()
    assert folder.app.job_status(job_id).counters.processed == 2


def _messages(folder: Folder, job_id: str):
    from common.domain.messages import ClassifyMessage

    job = folder.jobs.get_job(job_id)
    return [ClassifyMessage.for_job(job, result.name) for result in folder.jobs.results(job_id)]


@pytest.mark.parametrize("spot", ["tmp", "tmp/partial-old"])
def test_a_link_in_the_state_folders_tmp_never_lets_the_tidy_up_delete_photos(tmp_path, spot):
    put(tmp_path / "all/old.jpg", RED)
    old = time.time() - 3600
    os.utime(tmp_path / "all/old.jpg", (old, old))
    state = tmp_path / ".imgclassify"
    (state / "tmp").mkdir(parents=True, exist_ok=True)
    if spot == "tmp":
        os.rmdir(state / "tmp")
        (state / "tmp").symlink_to(tmp_path / "all")
    else:
        (state / spot).symlink_to(tmp_path / "all/old.jpg")
        os.utime(state / spot, (old, old), follow_symlinks=False)
    before = snapshot(tmp_path / "all")

    try:
        Folder(tmp_path).run(["cat"])
    except ConfigurationError:
        pass  # refusing is fine; following is not

    assert snapshot(tmp_path / "all") == before


@pytest.mark.parametrize("name", ["settings.json", "log.jsonl", "events.jsonl", "lock"])
def test_state_files_are_never_written_through_a_link(tmp_path, name):
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's")
    root = tmp_path / "dir"
    put(root / "all/a.jpg", RED)
    (root / ".imgclassify").mkdir(parents=True)
    (root / ".imgclassify" / name).symlink_to(victim)

    for attempt in (lambda: bootstrap.write_state_file(root, "settings.json", b"{}"),
                    lambda: bootstrap.log_stream(root).write("x\n"),
                    lambda: Folder(root).run(["cat"]),
                    lambda: bootstrap.lock_folder(root, "run").release()):
        try:
            attempt()
        except ConfigurationError:
            pass

    assert victim.read_text() == "the user's"


@pytest.mark.parametrize("side", ["jobs.sqlite3", "jobs.sqlite3-wal", "jobs.sqlite3-shm", "jobs.sqlite3-journal"])
def test_sqlite_refuses_a_database_or_side_file_that_is_a_link(tmp_path, side):
    from common.adapters.local import SqliteJobStore

    victim = tmp_path / "victim.jpg"
    victim.write_bytes(RED)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / side).symlink_to(victim)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        SqliteJobStore(tmp_path / "state/jobs.sqlite3")
    assert victim.read_bytes() == RED


def test_a_state_folder_that_is_a_link_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    root = tmp_path / "dir"
    put(root / "all/a.jpg", RED)
    (root / ".imgclassify").symlink_to(elsewhere)
    with pytest.raises(ConfigurationError, match="symbolic link"):
        Folder(root).run(["cat"])
    assert list(elsewhere.iterdir()) == []


def test_an_unreadable_remembered_setting_is_skipped_with_one_warning_naming_the_file(tmp_path, capsys):
    from imgclassify.cli.remembered import remembered

    (tmp_path / ".imgclassify").mkdir()
    (tmp_path / ".imgclassify/settings.json").write_text(json.dumps({"min_score": "nan", "top_k": 0,
                                                                     "model": "mobilenet_v2"}))
    assert remembered(tmp_path) == {"model": "mobilenet_v2"}
    err = capsys.readouterr().err
    assert err.count("settings.json") == 1 and "min_score" in err and "top_k" in err


def test_forged_classify_messages_are_never_counted(tmp_path):
    """Generated forgeries — unsigned, signed for another job or name, naming objects that do not exist or that
    the job never listed — against a completed job: its counts never move past what it listed."""
    from hypothesis import HealthCheck, given, settings, strategies as st

    from common.domain.messages import ClassifyMessage, signature

    folder, job_id = _sorted(tmp_path, photos=2)
    job = folder.jobs.get_job(job_id)
    put(tmp_path / "all/late.jpg", RED)  # a real photo that arrived after the listing
    names = st.sampled_from(["all/0.jpg", "all/late.jpg", "all/missing.jpg", "all/../x.jpg", "cat/0.jpg"])
    sigs = st.one_of(st.just(""), st.text("0123456789abcdef", min_size=32, max_size=32),
                     names.map(lambda n: signature(job.message_key, "f" * 32, n)),
                     names.map(lambda n: signature("ab" * 16, job_id, n)))

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(name=names, sig=sigs)
    def forged(name: str, sig: str) -> None:
        assert folder.classify(ClassifyMessage(job_id, name, job.spec, sig=sig)) is None
        view = folder.app.job_status(job_id)
        assert (view.counters.processed, view.counters.failed, view.number_of_files) == (2, 0, 2)

    forged()
    assert not (tmp_path / "cat/late.jpg").exists()


def test_a_signed_message_for_a_photo_deleted_since_the_listing_is_its_failure_and_the_job_completes(tmp_path):
    from common.domain.jobs import JobRecord, JobSpec, new_job_id
    from common.domain.messages import ClassifyMessage, new_message_key

    (tmp_path / "all").mkdir()
    folder = Folder(tmp_path)
    job = JobRecord(new_job_id(), JobSpec(("cat",), "local"), 1, "2026-12-03T00:00:00.000+00:00",
                    message_key=new_message_key())  # listed all/a.jpg, which is gone by its delivery
    folder.jobs.create_job(job)
    folder.classify(ClassifyMessage.for_job(job, "all/a.jpg"))
    view = folder.app.job_status(job.id)
    assert (view.counters.failed, view.complete) == (1, True)


def test_the_page_of_an_undone_job_offers_no_undo_and_no_corrections(tmp_path):
    from common.http import create_app
    from common.routes import Action

    folder, job_id = _sorted(tmp_path, photos=1)
    app = folder.app
    client = create_app(bootstrap.handlers(Action.REPORT, Action.UNDO, application=lambda: app),
                        app.settings).test_client()
    assert b'id="undo-job"' in client.get(f"/classification-job/{job_id}/report").data
    assert client.post(f"/classification-job/{job_id}/undo", json={}).status_code == 200

    page = client.get(f"/classification-job/{job_id}/report").data
    assert b'id="undo-job"' not in page and b"data-corrections" not in page and b"undone" in page
    assert folder.app.job_status(job_id).extra["undone_at"]


def test_the_log_is_rotated_when_a_command_starts_past_its_size_and_a_link_is_never_followed(tmp_path, monkeypatch):
    monkeypatch.setattr(bootstrap, "LOG_MAX_BYTES", 100)
    state = tmp_path / ".imgclassify"
    state.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("the user's")
    (state / "log.jsonl.2").symlink_to(victim)  # moved as a link, never written through
    for round_ in range(5):
        with bootstrap.log_stream(tmp_path) as log:
            log.write(f"{round_}" * 150 + "\n")
    kept = sorted(p.name for p in state.iterdir() if p.name.startswith("log.jsonl"))
    assert kept == ["log.jsonl", "log.jsonl.1", "log.jsonl.2", "log.jsonl.3"]
    assert (state / "log.jsonl").read_text().startswith("4") and (state / "log.jsonl.1").read_text().startswith("3")
    assert victim.read_text() == "the user's"
