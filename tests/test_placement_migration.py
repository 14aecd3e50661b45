"""Migration 10: a photo whose copies a correction changed before the page's index followed copies is placed where
its copies are (issue 30), once, when the folder is opened; dry runs and undone jobs keep what they matched."""
from __future__ import annotations

import json
import sqlite3

from common.adapters.local import SqliteJobStore
from common.adapters.local.sqlite import MIGRATIONS
from common.domain.jobs import JobSpec, new_job_id
from common.domain.results import ImageResult, Label


def _version_9(path, jobs: dict[str, bool]) -> None:
    """A database as the release before kept it, each job's photo matched `tulips` but its copy moved to `roses`
    by a correction (copies changed, the page's index not)."""
    db = sqlite3.connect(path, isolation_level=None)
    for number in range(9):
        MIGRATIONS[number](db)
    db.execute("PRAGMA user_version = 9")
    for job_id, dry_run in jobs.items():
        spec = JobSpec(classes=("tulips", "roses"), bucket="local", dry_run=dry_run)
        db.execute("INSERT INTO jobs (id, spec, number_of_files, created_at) VALUES (?, ?, 1, '2024-01-01')",
                   (job_id, json.dumps(spec.to_dict())))
        result = ImageResult("all/a.jpg", True, ("tulips",), (Label(1, "goldfish", 0.5),), scores={"tulips": 0.5},
                             copies=() if dry_run else ("roses/a.jpg",), content="md5:a")
        db.execute("INSERT INTO results (job_id, name, ok, payload, recorded_at, section) VALUES (?, ?, 1, ?, ?, 2)",
                   (job_id, result.name, json.dumps(result.to_dict()), "2024-01-01T00:00:01"))
        db.execute("INSERT INTO result_matches VALUES (?, 'tulips', 'all/a.jpg', 0.5)", (job_id,))
    db.close()


def test_photos_moved_by_earlier_corrections_are_shown_where_their_copies_are(tmp_path):
    moved, dry = new_job_id(), new_job_id()
    _version_9(tmp_path / "jobs.sqlite3", {moved: False, dry: True})
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    assert [r.name for r in store.results_page(moved, "class:roses", 0, 10)[0]] == ["all/a.jpg"]
    assert store.results_page(moved, "class:tulips", 0, 10)[1] == 0
    assert [r.name for r in store.results_page(dry, "class:tulips", 0, 10)[0]] == ["all/a.jpg"]  # what it decided
    store.close()
