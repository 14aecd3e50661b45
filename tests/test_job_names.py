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

    assert (first["id"], first["removed"]) == (newer["id"], 1)
    assert (second["id"], second["removed"]) == (older["id"], 1)
    assert not (tmp_path / "cat").exists() and not (tmp_path / "tabby").exists()
    listed = {job.view.id: job.undone_at for job in app.list_jobs()}
    assert all(listed[i] for i in (older["id"], newer["id"]))


def test_a_shortened_id_names_the_job_everywhere_a_job_is_named(tmp_path):
    folder = Folder(tmp_path)
    put(tmp_path / "all/a.jpg")
    job = folder.run(["cat"])
    app = folder.app
    short = job["id"][:8]
    assert app.job_status(short).id == job["id"]
    assert app.report(short).view.id == job["id"]
    assert app.undo_job(short)["id"] == job["id"]
