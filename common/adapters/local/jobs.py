"""The job store on SQLite: jobs, their results, arrivals and completion markers."""
from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from collections.abc import Callable, Iterable, Iterator

from common.adapters.local.sqlite import connect, database_errors
from common.domain.jobs import JobRecord, JobSpec
from common.domain.results import Counters, ImageResult


def _db_name(name: str) -> str:
    """Object names as SQLite can store them: a file name that is not valid UTF-8 reaches us with surrogate
    escapes, which SQLite's UTF-8 text cannot hold; they are stored as backslash escapes instead."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class SqliteJobStore:
    """Counters are aggregates over the results table, so they are exact by construction: the primary key makes
    each image count once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._db = connect(path)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

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

    def register_arrival(self, job_id: str, name: str) -> bool:
        with self._lock, database_errors("registering an arrival"):
            return self._db.execute("INSERT OR IGNORE INTO arrivals VALUES (?, ?)",
                                    (job_id, _db_name(name))).rowcount == 1

    def close_job(self, job_id: str) -> None:
        with self._lock, database_errors("closing a job"):
            self._db.execute("UPDATE jobs SET closed = 1 WHERE id = ?", (job_id,))

    def watch_jobs(self, bucket: str) -> list[JobRecord]:
        with self._lock, database_errors("listing watch jobs"):
            rows = self._db.execute("SELECT id, spec, number_of_files, created_at, request_id, error, errors, closed, "
                                    "callback, republished_at, message_key FROM jobs WHERE json_extract(spec, '$.watch') = 1 AND "
                                    "COALESCE(closed, 0) = 0").fetchall()
        jobs = [self._record(row[0], row[1:]) for row in rows]
        return [job for job in jobs if job.spec.bucket == bucket]

    def done_count(self, job_id: str) -> int:
        with self._lock, database_errors("counting results"):
            return int(self._db.execute("SELECT COUNT(*) FROM results WHERE job_id = ?", (job_id,)).fetchone()[0])

    def claim_completion(self, job_id: str) -> bool:
        with self._lock, database_errors("claiming a completion"):
            return self._db.execute("INSERT OR IGNORE INTO completions VALUES (?)", (job_id,)).rowcount == 1

    def record_callback(self, job_id: str, outcome: dict[str, object]) -> None:
        with self._lock, database_errors("recording a callback"):
            self._db.execute("UPDATE jobs SET callback = ? WHERE id = ?", (json.dumps(outcome), job_id))

    def record_job_error(self, job_id: str, message: str) -> None:
        with self._lock, database_errors("recording a job's error"):
            row = self._db.execute("SELECT errors FROM jobs WHERE id = ?", (job_id,)).fetchone()
            errors = json.loads(row[0] or "[]") if row else []
            if row and message not in errors:
                self._db.execute("UPDATE jobs SET errors = ? WHERE id = ?", (json.dumps(errors + [message]), job_id))

    def record_result(self, job_id: str, result: ImageResult) -> bool:
        with self._lock, database_errors("recording a result"):
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO results (job_id, name, ok, payload, recorded_at) VALUES (?, ?, ?, ?, ?)",
                (job_id, _db_name(result.name), int(result.ok), json.dumps(result.to_dict()),
                 datetime.now(UTC).isoformat(timespec="milliseconds")))
            return cursor.rowcount == 1

    def _change_result(self, job_id: str, name: str, change: Callable[[ImageResult], ImageResult | None],
                       unless_undone: bool) -> ImageResult | None:
        """Read, change and write one result in one IMMEDIATE transaction (no other writer, of any process, in
        between); the result as it was, or None when there is none (or the job is undone and that matters)."""
        with self._lock, database_errors("changing a job's copies"):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._locked_result(job_id, name)
                if before is not None and unless_undone and self._db.execute(
                        "SELECT 1 FROM undone WHERE job_id = ?", (job_id,)).fetchone():
                    before = None
                after = change(before) if before is not None else None
                if after is not None:
                    self._db.execute("UPDATE results SET payload = ? WHERE job_id = ? AND name = ?",
                                     (json.dumps(after.to_dict()), job_id, _db_name(name)))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return before

    def _locked_result(self, job_id: str, name: str) -> ImageResult | None:
        row = self._db.execute("SELECT payload FROM results WHERE job_id = ? AND name = ?",
                               (job_id, _db_name(name))).fetchone()
        return None if row is None else ImageResult.from_dict(json.loads(row[0]))

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
        with self._lock, database_errors("reading a job's counters"):
            processed, failed, unmatched, from_store, recomputed, latest = self._db.execute(
                "SELECT COALESCE(SUM(ok), 0), COALESCE(SUM(1 - ok), 0), "
                "COALESCE(SUM(ok AND json_array_length(payload, '$.matched') = 0), 0), "
                "COALESCE(SUM(json_extract(payload, '$.prediction') = 'store'), 0), "
                "COALESCE(SUM(json_extract(payload, '$.prediction') = 'recomputed'), 0), MAX(recorded_at) "
                "FROM results WHERE job_id = ?", (job_id,)).fetchone()
            rows = self._db.execute(
                "SELECT m.value, COUNT(*) FROM results, json_each(results.payload, '$.matched') AS m "
                "WHERE results.job_id = ? GROUP BY m.value", (job_id,)).fetchall()
            arrived = self._db.execute("SELECT COUNT(*) FROM arrivals WHERE job_id = ?", (job_id,)).fetchone()[0]
        return Counters(int(processed), int(failed), {name: int(count) for name, count in rows}, int(unmatched),
                        int(from_store), int(recomputed), int(arrived), latest)

    def results(self, job_id: str) -> Iterator[ImageResult]:
        with self._lock, database_errors("reading a job's results"):
            rows = self._db.execute("SELECT payload FROM results WHERE job_id = ? ORDER BY name",
                                    (job_id,)).fetchall()
        for (payload,) in rows:
            yield ImageResult.from_dict(json.loads(payload))

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

    def latest_job_id(self) -> str | None:
        with self._lock, database_errors("finding the latest job"):
            row = self._db.execute("SELECT id FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT 1").fetchone()
        return row[0] if row else None

    def result(self, job_id: str, name: str) -> ImageResult | None:
        with self._lock, database_errors("reading a result"):
            row = self._db.execute("SELECT payload FROM results WHERE job_id = ? AND name = ?",
                                   (job_id, _db_name(name))).fetchone()
        return None if row is None else ImageResult.from_dict(json.loads(row[0]))

    def forget_retryable_failures(self, job_id: str, names: Iterable[str] | None = None) -> list[str]:
        """Remove the job's failures that may pass now (the disk was full): a resume classifies them again. The
        counters are sums over the results, so they follow."""
        where = "job_id = ? AND ok = 0 AND json_extract(payload, '$.retryable') = 1"
        with self._lock, database_errors("forgetting retryable failures"):
            if names is None:
                rows = self._db.execute(f"DELETE FROM results WHERE {where} RETURNING payload", (job_id,)).fetchall()
            else:
                rows = [row for name in names for row in self._db.execute(
                    f"DELETE FROM results WHERE {where} AND name = ? RETURNING payload",
                    (job_id, _db_name(name))).fetchall()]
        return [json.loads(payload)["name"] for (payload,) in rows]
