"""Where a result is shown on its job's page, kept in the index the page is read through (`result_matches` and
`results.section`): a correction that takes a job's copy out of a class folder or adds one moves the photo there,
after a reload too. The rule is the domain's (`corrections.placed`), the one the use case filters other stores by;
this only keeps SQLite's index equal to it as a result's copies change."""
from __future__ import annotations

import json
import sqlite3

from common.domain.corrections import placed
from common.domain.jobs import JobSpec
from common.domain.results import ImageResult

SECTIONS = {"section:failed": 0, "section:unmatched": 1}  # results.section; 2: in a class (result_matches)


def section_of(result: ImageResult, shown: bool) -> int:
    """results.section: failed, in no class, or `shown` in one (result_matches says which)."""
    return 0 if not result.ok else 2 if shown else 1


def replace_placement(db: sqlite3.Connection, job_id: str, name: str, result: ImageResult) -> None:
    """Inside the caller's transaction: `name` (as stored) placed where its copies now are. A dry run's or an
    undone job's photos stay where they matched: their page shows what was decided, not copies."""
    row = db.execute("SELECT spec FROM jobs WHERE id = ?", (job_id,)).fetchone()
    spec = JobSpec.from_dict(json.loads(row[0])) if row is not None else None
    if spec is None or spec.dry_run or db.execute("SELECT 1 FROM undone WHERE job_id = ?", (job_id,)).fetchone():
        return
    shown = [c for c in spec.classes if placed(result, c, by_copies=True)]
    db.executemany("DELETE FROM result_matches WHERE job_id = ? AND class = ? AND name = ?",
                   [(job_id, c, name) for c in spec.classes])  # by its key: one row each, whatever the job's size
    db.executemany("INSERT INTO result_matches VALUES (?, ?, ?, ?)",
                   [(job_id, c, name, result.scores.get(c, 0.0)) for c in shown])
    db.execute("UPDATE results SET section = ? WHERE job_id = ? AND name = ?",
               (section_of(result, bool(shown)), job_id, name))
