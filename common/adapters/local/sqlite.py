"""One SQLite database per folder (DIR/.imgclassify/jobs.sqlite3): one connection setup, numbered migrations.

The schema's version is SQLite's own `PRAGMA user_version`; each migration runs once, in order, inside one
transaction with the version bump, so two processes opening an old database at once migrate it once.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from common.adapters.local.state import StateFolder
from common.domain.errors import ConfigurationError, TransientError

_JOBS_COLUMNS = ("id TEXT PRIMARY KEY, spec TEXT NOT NULL, number_of_files INTEGER, created_at TEXT NOT NULL, "
                 "request_id TEXT, error TEXT, errors TEXT, closed INTEGER, callback TEXT")


def _create_tables(db: sqlite3.Connection) -> None:
    """1: the tables (databases from before versions were kept have some of them, and maybe fewer columns)."""
    db.execute(f"CREATE TABLE IF NOT EXISTS jobs ({_JOBS_COLUMNS})")
    db.execute("CREATE TABLE IF NOT EXISTS arrivals (job_id TEXT NOT NULL, name TEXT NOT NULL, "
               "PRIMARY KEY (job_id, name))")
    db.execute("CREATE TABLE IF NOT EXISTS completions (job_id TEXT PRIMARY KEY)")
    db.execute("CREATE TABLE IF NOT EXISTS results (job_id TEXT NOT NULL, name TEXT NOT NULL, ok INTEGER NOT NULL, "
               "payload TEXT NOT NULL, PRIMARY KEY (job_id, name))")
    db.execute("CREATE TABLE IF NOT EXISTS predictions (model TEXT NOT NULL, content TEXT NOT NULL, "
               "prediction BLOB NOT NULL, PRIMARY KEY (model, content))")


def _jobs_columns_typed(db: sqlite3.Connection) -> None:
    """2: every jobs column with its declared type. Earlier releases added the late columns as TEXT (`closed`
    among them, which the schema says is INTEGER): the table is rebuilt with the right types."""
    declared = {row[1]: row[2] for row in db.execute("PRAGMA table_info(jobs)")}
    wanted = {part.split()[0]: part.split()[1] for part in _JOBS_COLUMNS.split(", ")}
    if declared == wanted:
        return
    present = [name for name in wanted if name in declared]
    db.execute(f"CREATE TABLE jobs_typed ({_JOBS_COLUMNS})")
    closed = "CAST(closed AS INTEGER)" if "closed" in declared else "NULL"
    columns = ", ".join(present)
    selected = ", ".join(closed if name == "closed" else name for name in present)
    db.execute(f"INSERT INTO jobs_typed ({columns}) SELECT {selected} FROM jobs")
    db.execute("DROP TABLE jobs")
    db.execute("ALTER TABLE jobs_typed RENAME TO jobs")


def _undone_jobs(db: sqlite3.Connection) -> None:
    """3: when each undone job was undone."""
    db.execute("CREATE TABLE IF NOT EXISTS undone (job_id TEXT PRIMARY KEY, at TEXT NOT NULL)")


def _corrections(db: sqlite3.Connection) -> None:
    """4: what people said photos are or are not (a correction, kept for later jobs in this folder)."""
    db.execute("CREATE TABLE IF NOT EXISTS corrections (bucket TEXT NOT NULL, word TEXT NOT NULL, "
               "content TEXT NOT NULL, belongs INTEGER NOT NULL, PRIMARY KEY (bucket, word, content))")


def _results_recorded_at(db: sqlite3.Connection) -> None:
    """5: when each result was recorded (a running job whose results stop coming is stalled)."""
    if "recorded_at" not in {row[1] for row in db.execute("PRAGMA table_info(results)")}:
        db.execute("ALTER TABLE results ADD COLUMN recorded_at TEXT")


def _jobs_republished_at(db: sqlite3.Connection) -> None:
    """6: when a job's images without a result were last re-published (a retry waits out the delivery deadline)."""
    if "republished_at" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}:
        db.execute("ALTER TABLE jobs ADD COLUMN republished_at TEXT")


def _jobs_message_key(db: sqlite3.Connection) -> None:
    """7: the key each job's messages are signed with."""
    if "message_key" not in {row[1] for row in db.execute("PRAGMA table_info(jobs)")}:
        db.execute("ALTER TABLE jobs ADD COLUMN message_key TEXT")


def _job_counters(db: sqlite3.Connection) -> None:
    """8: counters kept, not counted: each job's counts, updated in the same transaction as each of its results
    (jobs.py), so a status read costs the same at 200,000 photos as at 10; and each result's section (0 failed,
    1 matched no class, 2 matched), its searchable text (name and top labels, lowercased) and closest score, and a
    row per class it matched, so that one page of a section is read through an index. Existing jobs are counted
    here once, by the aggregates that used to run on every status read."""
    db.execute("CREATE TABLE IF NOT EXISTS job_counters (job_id TEXT PRIMARY KEY, "
               "processed INTEGER NOT NULL DEFAULT 0, "
               "failed INTEGER NOT NULL DEFAULT 0, unmatched INTEGER NOT NULL DEFAULT 0, from_store INTEGER NOT NULL "
               "DEFAULT 0, recomputed INTEGER NOT NULL DEFAULT 0, arrived INTEGER NOT NULL DEFAULT 0, "
               "written INTEGER NOT NULL DEFAULT 0, last_result_at TEXT)")
    db.execute("CREATE TABLE IF NOT EXISTS job_matches (job_id TEXT NOT NULL, class TEXT NOT NULL, "
               "count INTEGER NOT NULL, PRIMARY KEY (job_id, class)) WITHOUT ROWID")
    db.execute("CREATE TABLE IF NOT EXISTS result_matches (job_id TEXT NOT NULL, class TEXT NOT NULL, "
               "name TEXT NOT NULL, score REAL NOT NULL, PRIMARY KEY (job_id, class, name)) WITHOUT ROWID")
    columns = {row[1] for row in db.execute("PRAGMA table_info(results)")}
    for column, kind in (("section", "INTEGER"), ("search", "TEXT"), ("score", "REAL")):
        if column not in columns:
            db.execute(f"ALTER TABLE results ADD COLUMN {column} {kind}")
    db.execute("CREATE INDEX IF NOT EXISTS results_by_section ON results (job_id, section, name)")
    _count_existing(db)


def _count_existing(db: sqlite3.Connection) -> None:
    db.execute("INSERT OR IGNORE INTO job_counters (job_id) SELECT id FROM jobs")
    db.execute(
        "UPDATE job_counters SET (processed, failed, unmatched, from_store, recomputed, written, last_result_at) = "
        "(SELECT COALESCE(SUM(ok), 0), COALESCE(SUM(1 - ok), 0), "
        "COALESCE(SUM(ok AND json_array_length(payload, '$.matched') = 0), 0), "
        "COALESCE(SUM(json_extract(payload, '$.prediction') = 'store'), 0), "
        "COALESCE(SUM(json_extract(payload, '$.prediction') = 'recomputed'), 0), "
        "COALESCE(SUM(json_array_length(payload, '$.written')), 0), MAX(recorded_at) "
        "FROM results WHERE results.job_id = job_counters.job_id), "
        "arrived = (SELECT COUNT(*) FROM arrivals WHERE arrivals.job_id = job_counters.job_id)")
    db.execute("INSERT OR IGNORE INTO job_matches SELECT results.job_id, m.value, COUNT(*) FROM results, "
               "json_each(results.payload, '$.matched') AS m GROUP BY results.job_id, m.value")
    db.execute("INSERT OR IGNORE INTO result_matches SELECT r.job_id, m.value, r.name, COALESCE((SELECT s.value FROM "
               "json_each(r.payload, '$.scores') AS s WHERE s.key = m.value), 0) FROM results AS r, "
               "json_each(r.payload, '$.matched') AS m")
    db.execute("UPDATE results SET section = CASE WHEN ok = 0 THEN 0 WHEN json_array_length(payload, '$.matched') "
               "= 0 THEN 1 ELSE 2 END, score = (SELECT MAX(s.value) FROM json_each(payload, '$.scores') AS s), "
               "search = lower(name || char(10) || COALESCE((SELECT group_concat(json_extract(l.value, '$.name'), "
               "', ') FROM json_each(payload, '$.labels') AS l WHERE l.key < 3), ''))")


def _fingerprints(db: sqlite3.Connection) -> None:
    """9: a folder's fingerprints by stat, as git's index: a photo whose path, size, times, device and inode are
    unchanged since it was hashed is not read again (fingerprints.py holds the rule)."""
    db.execute("CREATE TABLE IF NOT EXISTS fingerprints (path BLOB PRIMARY KEY, size INTEGER NOT NULL, "
               "mtime_ns INTEGER NOT NULL, ctime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, device INTEGER NOT "
               "NULL, content TEXT NOT NULL, hashed_ns INTEGER NOT NULL) WITHOUT ROWID")


def _placed_by_copies(db: sqlite3.Connection) -> None:
    """10: a photo a correction moved before the page's index followed copies (placement.py) is placed where its
    copies are, once. Only rows that matched or have copies are read (a small part of a library's)."""
    from common.adapters.local.placement import replace_placement
    from common.adapters.local.result_rows import decode
    from common.domain.corrections import placed

    rows = db.execute("SELECT r.job_id, r.name, r.payload, j.spec FROM results AS r JOIN jobs AS j ON j.id = r.job_id "
                      "WHERE r.ok = 1 AND (r.section = 2 OR instr(r.payload, '\"copies\"') > 0) AND "
                      "COALESCE(json_extract(j.spec, '$.dry_run'), 0) = 0 AND "
                      "r.job_id NOT IN (SELECT job_id FROM undone)").fetchall()
    for job_id, name, payload, spec in rows:
        result, classes = decode(name, payload), json.loads(spec).get("classes", [])
        if {c for c in classes if placed(result, c, by_copies=True)} != set(result.matched) & set(classes):
            replace_placement(db, job_id, name, result)


MIGRATIONS = (_create_tables, _jobs_columns_typed, _undone_jobs, _corrections, _results_recorded_at,
              _jobs_republished_at, _jobs_message_key, _job_counters, _fingerprints, _placed_by_copies)


def schema_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite3.Connection) -> None:
    if schema_version(db) >= len(MIGRATIONS):
        return
    db.execute("BEGIN IMMEDIATE")  # one migrating process at a time; the others wait, then find it done
    try:
        for number in range(schema_version(db), len(MIGRATIONS)):
            MIGRATIONS[number](db)
            db.execute(f"PRAGMA user_version = {number + 1}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def connect(path: str | os.PathLike[str]) -> sqlite3.Connection:
    """A connection to the folder's database, migrated, or a ConfigurationError saying what to do. Opened through
    the state folder's boundary: neither the database nor its journal, WAL or shared-memory file may be a link
    (SQLite resolves the path once, when it opens; the files are checked before and after)."""
    with StateFolder(Path(path).parent) as state:
        db = sqlite3.connect(state.database(Path(path).name), check_same_thread=False, isolation_level=None,
                             timeout=30)
        try:
            _set_up(db, path)
            state.check_database(Path(path).name)
        except BaseException:
            db.close()
            raise
    return db


def _set_up(db: sqlite3.Connection, path: str | os.PathLike[str]) -> None:
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        migrate(db)
    except sqlite3.DatabaseError as exc:
        raise ConfigurationError(f"{path} is not a readable job database ({exc}): move it aside (the job history in "
                                 "it is lost; photos and copies are not touched) and run again") from None


@contextlib.contextmanager
def database_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:  # locked or busy past the timeout: may pass
        raise TransientError(f"{operation}: {exc}") from exc
