"""The job store on SQLite: jobs, their results, arrivals and completion markers, and each job's counters, kept as
its results are recorded (in the same transaction), never counted over them.

Results are committed in groups (group commit): a commit costs ~100-200 µs whatever it holds, more than the rest of
a known photo's work. A result is held in memory until RECORD_BATCH are waiting or RECORD_SECONDS have passed, or
anything reads the job (this process reads its own results: every read commits what is waiting first). A result
whose delivery wrote a copy is committed before it returns, with those waiting: the job's ownership of a copy is
never lost. A hard kill loses at most the last RECORD_SECONDS of results that wrote nothing; they were not counted
either, so the rerun classifies them again (from the prediction store) and counts stay exact.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from collections.abc import Callable, Iterable, Iterator

from common.adapters.local.placement import SECTIONS, replace_placement, section_of
from common.adapters.local.result_rows import db_name as _db_name, decode as _decode, encode as _encode, \
    search_text as _search_text
from common.adapters.local.sqlite import connect, database_errors
from common.domain.jobs import JobRecord, JobSpec
from common.domain.results import Counters, ImageResult

# One statement adds a result's counts (or takes them away: negative) to its job's row, made on first use.
_COUNT = ("INSERT INTO job_counters (job_id, processed, failed, unmatched, from_store, recomputed, written, "
          "last_result_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (job_id) DO UPDATE SET "
          "processed = processed + excluded.processed, failed = failed + excluded.failed, "
          "unmatched = unmatched + excluded.unmatched, from_store = from_store + excluded.from_store, "
          "recomputed = recomputed + excluded.recomputed, written = written + excluded.written, "
          "last_result_at = CASE WHEN excluded.last_result_at > COALESCE(last_result_at, '') "
          "THEN excluded.last_result_at ELSE last_result_at END")
_COUNT_MATCH = ("INSERT INTO job_matches VALUES (?, ?, ?) ON CONFLICT (job_id, class) DO UPDATE SET "
                "count = count + excluded.count")
_INSERT = ("INSERT OR IGNORE INTO results (job_id, name, ok, payload, recorded_at, section, search, score) "
           "VALUES (?, ?, ?, ?, ?, ?, lower(?), ?)")
RECORD_BATCH = 256
# Per class, the photos a correction placed, kept beside the matches under a key no class can have ("/").
CORRECTED = "/corrected/"
RECORD_SECONDS = 0.1


@dataclass
class _Waiting:
    """Results recorded and not committed yet, in order: (job id, stored name) -> the row and its result."""

    rows: dict[tuple[str, str], tuple[tuple[object, ...], ImageResult]] = field(default_factory=dict)
    per_job: dict[str, int] = field(default_factory=dict)
    since: float = 0.0


def _commit(db: sqlite3.Connection, waiting: _Waiting) -> None:
    """Insert and count every waiting result in one transaction (the caller holds the store's lock); on failure
    they stay waiting."""
    if not waiting.rows:
        return
    # Counted per job, once per commit: one counter update for the batch, not one per photo.
    deltas: dict[str, tuple[Counters, list[int], list[str]]] = {}
    placed: list[tuple[str, str, str, float]] = []
    db.execute("BEGIN IMMEDIATE")
    try:
        for (job_id, name), (row, result) in waiting.rows.items():
            if db.execute(_INSERT, row).rowcount == 1:
                delta, written, at = deltas.setdefault(job_id, (Counters(), [0], [""]))
                delta.add(Counters.of(result))
                written[0] += len(result.written)
                at[0] = max(at[0], str(row[4]))
                placed.extend((job_id, c, name, result.scores.get(c, 0.0)) for c in result.matched)
        for job_id, (delta, written, at) in deltas.items():
            _add_counts(db, job_id, delta, written[0], 1, at[0])
        db.executemany("INSERT OR IGNORE INTO result_matches VALUES (?, ?, ?, ?)", placed)
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    waiting.rows.clear()
    waiting.per_job.clear()


def _commit_at_exit(db: sqlite3.Connection, lock: threading.Lock, waiting: _Waiting) -> None:
    with lock, contextlib.suppress(sqlite3.Error):  # the connection may be closed already
        _commit(db, waiting)


def _count(db: sqlite3.Connection, job_id: str, result: ImageResult, sign: int, at: str | None) -> None:
    """Add one result's counts to its job's (sign -1: take them away), inside the caller's transaction."""
    _add_counts(db, job_id, Counters.of(result), len(result.written), sign, at)


def _add_counts(db: sqlite3.Connection, job_id: str, delta: Counters, written: int, sign: int,
                at: str | None) -> None:
    db.execute(_COUNT, (job_id, sign * delta.processed, sign * delta.failed, sign * delta.unmatched,
                        sign * delta.from_store, sign * delta.recomputed, sign * written, at))
    if delta.matches or delta.corrected:
        db.executemany(_COUNT_MATCH, [(job_id, c, sign * n) for c, n in delta.matches.items()] +
                       [(job_id, CORRECTED + c, sign * n) for c, n in delta.corrected.items()])


class SqliteJobStore:
    """The primary key makes each image count once; the counters move in the same transaction as the insert (and
    the removal of a retryable failure), so they are exact without being aggregates."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._db = connect(path)
        self._lock = threading.Lock()
        self._waiting = _Waiting()
        self._closed = weakref.finalize(self, _commit_at_exit, self._db, self._lock, self._waiting)

    def close(self) -> None:
        self._closed()  # what is waiting is committed
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _current(self, operation: str) -> Iterator[None]:
        """The lock, with the results waiting committed first: a read sees every result recorded before it."""
        with self._lock, database_errors(operation):
            _commit(self._db, self._waiting)
            yield

    def create_job(self, job: JobRecord) -> bool:
        with self._lock, database_errors("recording a job"):
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO jobs (id, spec, number_of_files, created_at, request_id, error, message_key) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)", (job.id, json.dumps(job.spec.to_dict()), job.number_of_files,
                                                 job.created_at, job.request_id, job.error, job.message_key))
            return cursor.rowcount == 1

    def set_total(self, job_id: str, number_of_files: int) -> None:
        with self._lock, database_errors("recording a job's total"):
            self._db.execute("UPDATE jobs SET number_of_files = ?, error = NULL WHERE id = ?",
                             (number_of_files, job_id))

    def mark_failed(self, job_id: str, reason: str) -> None:
        with self._lock, database_errors("recording a job's failure"):
            self._db.execute("UPDATE jobs SET error = ? WHERE id = ?", (reason, job_id))

    def claim_republish(self, job_id: str, at: str, since: str) -> bool:
        with self._lock, database_errors("claiming a re-publish"):  # one statement: atomic across processes too
            return self._db.execute("UPDATE jobs SET republished_at = ? WHERE id = ? AND (republished_at IS NULL "
                                    "OR republished_at <= ?)", (at, job_id, since)).rowcount == 1

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._lock, database_errors("reading a job"):
            row = self._db.execute("SELECT spec, number_of_files, created_at, request_id, error, errors, closed, "
                                   "callback, republished_at, message_key FROM jobs WHERE id = ?",
                                   (job_id,)).fetchone()
        return None if row is None else self._record(job_id, row)

    @staticmethod
    def _record(job_id: str, row: tuple) -> JobRecord:
        return JobRecord(job_id, JobSpec.from_dict(json.loads(row[0])), row[1], row[2], row[3], row[4],
                         tuple(json.loads(row[5] or "[]")), bool(row[6]), json.loads(row[7]) if row[7] else None,
                         row[8], row[9] or "")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One IMMEDIATE transaction (no other writer, of any process, in between); the caller holds the lock."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def register_arrival(self, job_id: str, name: str) -> bool:
        with self._lock, database_errors("registering an arrival"), self._transaction():
            added = self._db.execute("INSERT OR IGNORE INTO arrivals VALUES (?, ?)",
                                     (job_id, _db_name(name))).rowcount == 1
            if added:
                self._db.execute("INSERT INTO job_counters (job_id, arrived) VALUES (?, 1) ON CONFLICT (job_id) "
                                 "DO UPDATE SET arrived = arrived + 1", (job_id,))
            return added

    def close_job(self, job_id: str) -> None:
        with self._lock, database_errors("closing a job"):
            self._db.execute("UPDATE jobs SET closed = 1 WHERE id = ?", (job_id,))

    def watch_jobs(self, bucket: str) -> list[JobRecord]:
        with self._lock, database_errors("listing watch jobs"):
            rows = self._db.execute("SELECT id, spec, number_of_files, created_at, request_id, error, errors, closed, "
                                    "callback, republished_at, message_key FROM jobs "
                                    "WHERE json_extract(spec, '$.watch') = 1 AND "
                                    "COALESCE(closed, 0) = 0").fetchall()
        jobs = [self._record(row[0], row[1:]) for row in rows]
        return [job for job in jobs if job.spec.bucket == bucket]

    def done_count(self, job_id: str) -> int:
        """Asked after every image: the kept count and those waiting, without committing them."""
        with self._lock, database_errors("counting results"):
            row = self._db.execute("SELECT processed + failed FROM job_counters WHERE job_id = ?", (job_id,)).fetchone()
            return (int(row[0]) if row else 0) + self._waiting.per_job.get(job_id, 0)

    def claim_completion(self, job_id: str) -> bool:
        with self._lock, database_errors("claiming a completion"):
            return self._db.execute("INSERT OR IGNORE INTO completions VALUES (?)", (job_id,)).rowcount == 1

    def record_callback(self, job_id: str, outcome: dict[str, object]) -> None:
        with self._lock, database_errors("recording a callback"):
            self._db.execute("UPDATE jobs SET callback = ? WHERE id = ?", (json.dumps(outcome), job_id))

    def on_counted(self, announce: Callable[[str], object]) -> bool:
        return False  # each result is counted as it is recorded: its recorder announces

    def record_job_error(self, job_id: str, message: str) -> None:
        with self._lock, database_errors("recording a job's error"):
            row = self._db.execute("SELECT errors FROM jobs WHERE id = ?", (job_id,)).fetchone()
            errors = json.loads(row[0] or "[]") if row else []
            if row and message not in errors:
                self._db.execute("UPDATE jobs SET errors = ? WHERE id = ?", (json.dumps(errors + [message]), job_id))

    def record_result(self, job_id: str, result: ImageResult) -> bool:
        """Once per (job, name): False for a result already recorded, committed or waiting."""
        name = _db_name(result.name)
        row = (job_id, name, int(result.ok), _encode(result), datetime.now(UTC).isoformat(timespec="milliseconds"),
               section_of(result, bool(result.matched)), _search_text(result),
               max(result.scores.values()) if result.ok and result.scores else None)
        waiting = self._waiting
        with self._lock, database_errors("recording a result"):
            if (job_id, name) in waiting.rows or self._db.execute(
                    "SELECT 1 FROM results WHERE job_id = ? AND name = ?", (job_id, name)).fetchone():
                return False
            if not waiting.rows:
                waiting.since = time.monotonic()
            waiting.rows[(job_id, name)] = (row, result)
            waiting.per_job[job_id] = waiting.per_job.get(job_id, 0) + 1
            if result.written or len(waiting.rows) >= RECORD_BATCH or \
                    time.monotonic() - waiting.since >= RECORD_SECONDS:
                _commit(self._db, waiting)  # a copy's ownership is durable before its delivery returns
        return True

    def _change_result(self, job_id: str, name: str, change: Callable[[ImageResult], ImageResult | None],
                       unless_undone: bool) -> ImageResult | None:
        """Read, change and write one result in one IMMEDIATE transaction (no other writer, of any process, in
        between); the result as it was, or None when there is none (or the job is undone and that matters)."""
        with self._current("changing a job's copies"), self._transaction():
            before = self._locked_result(job_id, name)
            if before is not None and unless_undone and self._db.execute(
                    "SELECT 1 FROM undone WHERE job_id = ?", (job_id,)).fetchone():
                before = None
            after = change(before) if before is not None else None
            if after is not None and before is not None:
                self._db.execute("UPDATE results SET payload = ? WHERE job_id = ? AND name = ?",
                                 (_encode(after), job_id, _db_name(name)))
                replace_placement(self._db, job_id, _db_name(name), after)  # the page shows it where it now is
                self._db.execute("UPDATE job_counters SET written = written + ? WHERE job_id = ?",
                                 (len(after.written) - len(before.written), job_id))
        return before

    def _locked_result(self, job_id: str, name: str) -> ImageResult | None:
        row = self._db.execute("SELECT payload FROM results WHERE job_id = ? AND name = ?", (job_id, _db_name(name)))
        return None if (found := row.fetchone()) is None else _decode(name, found[0])

    def claim_copy(self, job_id: str, name: str, copy: str, written: bool, identity: str = "") -> bool:
        return self._change_result(job_id, name, lambda r: r.claimed(copy, written, identity),
                                   unless_undone=True) is not None

    def release_copy(self, job_id: str, name: str, copy: str) -> bool:
        before = self._change_result(job_id, name, lambda r: r.released(copy) if copy in r.copies else None,
                                     unless_undone=False)
        return before is not None and copy in before.written

    def undone_at(self, job_id: str) -> str | None:
        with self._lock, database_errors("reading an undo"):
            row = self._db.execute("SELECT at FROM undone WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else str(row[0])

    def counters(self, job_id: str) -> Counters:
        """Two keyed reads, whatever the job's size."""
        with self._current("reading a job's counters"):
            row = self._db.execute("SELECT processed, failed, unmatched, from_store, recomputed, arrived, "
                                   "last_result_at FROM job_counters WHERE job_id = ?", (job_id,)).fetchone()
            rows = self._db.execute("SELECT class, count FROM job_matches WHERE job_id = ? AND count != 0 "
                                    "ORDER BY class", (job_id,)).fetchall()
        if row is None:
            return Counters()
        matches = {str(c): int(n) for c, n in rows if not c.startswith(CORRECTED)}
        corrected = {str(c)[len(CORRECTED):]: int(n) for c, n in rows if c.startswith(CORRECTED)}
        return Counters(row[0], row[1], matches, row[2], row[3], row[4], row[5], row[6], corrected)

    def copies_written(self, job_id: str) -> int:
        """The copies the job owns now (written, not yet released), kept as the manifest changes."""
        with self._current("reading a job's counters"):
            row = self._db.execute("SELECT written FROM job_counters WHERE job_id = ?", (job_id,)).fetchone()
        return int(row[0]) if row else 0

    def results(self, job_id: str) -> Iterator[ImageResult]:
        with self._current("reading a job's results"):
            rows = self._db.execute("SELECT name, payload FROM results WHERE job_id = ? ORDER BY name",
                                    (job_id,)).fetchall()
        for name, payload in rows:
            yield _decode(name, payload)

    def results_page(self, job_id: str, section: str, offset: int, limit: int, query: str = "",
                     min_score: float | None = None, skip: int = 0) -> tuple[list[ImageResult], int]:
        """One page of a section's results in name order, and how many the section has (with the search `query`
        in the name past its first `skip` characters or in the top labels, and a score of at least `min_score`):
        read through an index, so a page costs the same whatever the job's size (a search scans the section)."""
        if section.startswith("class:"):
            source = ("FROM result_matches AS m JOIN results AS r ON r.job_id = m.job_id AND r.name = m.name "
                      "WHERE m.job_id = ? AND m.class = ?")
            arguments: list[object] = [job_id, section[len("class:"):]]
            score, order = "m.score", "m.name"
        elif section in SECTIONS:
            source, arguments = "FROM results AS r WHERE r.job_id = ? AND r.section = ?", [job_id, SECTIONS[section]]
            score, order = "r.score", "r.name"
        else:
            return [], 0
        if query:
            source += " AND instr(substr(r.search, ?), lower(?)) > 0"
            arguments += [skip + 1, query]
        if min_score is not None:
            source += f" AND {score} >= ?"
            arguments.append(min_score)
        with self._current("reading a page of results"):
            total = self._db.execute(f"SELECT COUNT(*) {source}", arguments).fetchone()[0]
            rows = self._db.execute(f"SELECT r.name, r.payload {source} ORDER BY {order} LIMIT ? OFFSET ?",
                                    [*arguments, limit, offset]).fetchall()
        return [_decode(name, payload) for name, payload in rows], int(total)

    def record_undo(self, job_id: str, at: str) -> bool:
        with self._lock, database_errors("recording an undo"):
            return self._db.execute("INSERT OR IGNORE INTO undone VALUES (?, ?)", (job_id, at)).rowcount == 1

    def undone_jobs(self) -> dict[str, str]:
        with self._lock, database_errors("listing undone jobs"):
            return dict(self._db.execute("SELECT job_id, at FROM undone").fetchall())

    def job_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        with self._lock, database_errors("finding a job by a shortened id"):
            return [row[0] for row in self._db.execute(
                "SELECT id FROM jobs WHERE substr(id, 1, ?) = ? ORDER BY id LIMIT ?", (len(prefix), prefix, limit))]

    def job_ids(self) -> list[str]:
        """Every job, oldest first."""
        with self._lock, database_errors("listing jobs"):
            return [row[0] for row in self._db.execute("SELECT id FROM jobs ORDER BY created_at, rowid")]

    def recent_job_ids(self, limit: int) -> list[str]:
        with self._lock, database_errors("listing recent jobs"):
            return [row[0] for row in self._db.execute(
                "SELECT id FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT ?", (limit,))]

    def latest_job_id(self) -> str | None:
        with self._lock, database_errors("finding the latest job"):
            row = self._db.execute("SELECT id FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def result(self, job_id: str, name: str) -> ImageResult | None:
        with self._current("reading a result"):
            return self._locked_result(job_id, name)

    def forget_retryable_failures(self, job_id: str, names: Iterable[str] | None = None) -> list[str]:
        """Remove the job's failures that may pass now (the disk was full): a resume classifies them again. Their
        counts are taken away in the same transaction."""
        where = "job_id = ? AND ok = 0 AND json_extract(payload, '$.retryable') = 1"
        with self._current("forgetting retryable failures"), self._transaction():
            if names is None:
                rows = self._db.execute(f"DELETE FROM results WHERE {where} RETURNING name, payload",
                                        (job_id,)).fetchall()
            else:
                rows = [row for name in names for row in self._db.execute(
                    f"DELETE FROM results WHERE {where} AND name = ? RETURNING name, payload",
                    (job_id, _db_name(name))).fetchall()]
            forgotten = [_decode(name, payload) for name, payload in rows]
            for result in forgotten:
                _count(self._db, job_id, result, -1, None)
        return [result.name for result in forgotten]
