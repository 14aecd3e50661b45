"""One SQLite database per folder (DIR/.imgclassify/jobs.sqlite3): one connection setup, numbered migrations.

The schema's version is SQLite's own `PRAGMA user_version`; each migration runs once, in order, inside one
transaction with the version bump, so two processes opening an old database at once migrate it once.
"""
from __future__ import annotations

import contextlib
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


MIGRATIONS = (_create_tables, _jobs_columns_typed, _undone_jobs, _corrections, _results_recorded_at,
              _jobs_republished_at, _jobs_message_key)


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
