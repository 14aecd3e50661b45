"""Embedded adapters: a folder is the bucket, SQLite is the job store, a thread pool is the queue."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from common.domain.errors import ObjectMissing, PermanentImageError, TransientError
from common.domain.jobs import JobRecord, JobSpec
from common.domain.messages import ClassifyMessage
from common.domain.results import Counters, ImageResult
from common.logs import get_logger

log = get_logger("local")

STATE_DIR = ".imgclassify"
# The local equivalents of a cloud 503: the disk or the database is busy or full for now.
TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ENOSPC, errno.EDQUOT, errno.EMFILE,
                              errno.ENFILE, errno.ETIMEDOUT, errno.ESTALE, errno.ENOMEM})


@contextlib.contextmanager
def file_errors(operation: str, name: str) -> Iterator[None]:
    """The retry policy at the folder boundary: busy/full becomes TransientError, a missing file ObjectMissing,
    anything else about this file (permissions, a loop, an undecodable name) its permanent failure."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ObjectMissing(name) from None
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise TransientError(f"{operation} {name}: {exc.strerror}") from exc
        raise PermanentImageError(f"{operation} {name}: {exc.strerror or exc}") from exc


@contextlib.contextmanager
def database_errors(operation: str) -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:  # locked or busy past the timeout: may pass
        raise TransientError(f"{operation}: {exc}") from exc


class FolderObjectStore:
    """Objects are files under root; names use '/' whatever the OS. The bucket name is ignored: root is the bucket."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self._copy_lock = threading.Lock()  # check-then-write of one copy is atomic within the process
        # Files are written here, then renamed into place: a killed run leaves no half photo, and no stray
        # temporary file, in the user's folders. Same filesystem as root, so the rename is atomic.
        self._tmp = self.root / STATE_DIR / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        stale = time.time() - 600  # older than any write in flight, even from another process on this folder
        for leftover in self._tmp.iterdir():
            if leftover.stat().st_mtime < stale:
                leftover.unlink(missing_ok=True)

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ObjectMissing(name)  # names come from messages: never let one point outside the folder
        return path

    def list_names(self, bucket: str, prefix: str) -> Iterator[str]:
        base = self.root / prefix
        if not base.is_dir():
            return
        for directory, subdirs, files in os.walk(base):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for file in sorted(files):
                if file.startswith("."):
                    continue
                yield Path(directory, file).relative_to(self.root).as_posix()

    def read(self, bucket: str, name: str) -> bytes:
        with file_errors("cannot read", name):
            return self._path(name).read_bytes()

    def copy(self, bucket: str, source: str, target: str) -> bool:
        data = self.read(bucket, source)
        path = self._path(target)
        with self._copy_lock, file_errors("cannot copy to", target):
            if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
                return False
            self._write(target, data)
        return True

    def write(self, bucket: str, name: str, data: bytes) -> None:
        with file_errors("cannot write", name):
            self._write(name, data)

    def _write(self, name: str, data: bytes) -> None:
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="partial-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, spec TEXT NOT NULL, number_of_files INTEGER, created_at TEXT NOT NULL,
    request_id TEXT, error TEXT);
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT NOT NULL, name TEXT NOT NULL, ok INTEGER NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (job_id, name));
"""


class SqliteJobStore:
    """Counters are aggregates over the results table, so they are exact by construction: the primary key makes
    each image count once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for column in ("request_id", "error"):  # databases written before these columns existed
                if column not in columns:
                    self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} TEXT")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def create_job(self, job: JobRecord) -> bool:
        with self._lock, database_errors("recording a job"):
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO jobs (id, spec, number_of_files, created_at, request_id, error) "
                "VALUES (?, ?, ?, ?, ?, ?)", (job.id, json.dumps(job.spec.to_dict()), job.number_of_files,
                                              job.created_at, job.request_id, job.error))
            return cursor.rowcount == 1

    def set_total(self, job_id: str, number_of_files: int) -> None:
        with self._lock, database_errors("recording a job's total"):
            self._db.execute("UPDATE jobs SET number_of_files = ?, error = NULL WHERE id = ?",
                             (number_of_files, job_id))

    def mark_failed(self, job_id: str, reason: str) -> None:
        with self._lock, database_errors("recording a job's failure"):
            self._db.execute("UPDATE jobs SET error = ? WHERE id = ?", (reason, job_id))

    def get_job(self, job_id: str) -> JobRecord | None:
        with self._lock, database_errors("reading a job"):
            row = self._db.execute("SELECT spec, number_of_files, created_at, request_id, error FROM jobs "
                                   "WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        return JobRecord(job_id, JobSpec.from_dict(json.loads(row[0])), row[1], row[2], row[3], row[4])

    def has_result(self, job_id: str, name: str) -> bool:
        with self._lock, database_errors("reading a result"):
            return self._db.execute("SELECT 1 FROM results WHERE job_id = ? AND name = ?",
                                    (job_id, name)).fetchone() is not None

    def record_result(self, job_id: str, result: ImageResult) -> bool:
        with self._lock, database_errors("recording a result"):
            cursor = self._db.execute("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?)",
                                      (job_id, result.name, int(result.ok), json.dumps(result.to_dict())))
            return cursor.rowcount == 1

    def counters(self, job_id: str) -> Counters:
        with self._lock, database_errors("reading a job's counters"):
            processed, failed, unmatched = self._db.execute(
                "SELECT COALESCE(SUM(ok), 0), COALESCE(SUM(1 - ok), 0), "
                "COALESCE(SUM(ok AND json_array_length(payload, '$.matched') = 0), 0) "
                "FROM results WHERE job_id = ?", (job_id,)).fetchone()
            rows = self._db.execute(
                "SELECT m.value, COUNT(*) FROM results, json_each(results.payload, '$.matched') AS m "
                "WHERE results.job_id = ? GROUP BY m.value", (job_id,)).fetchall()
        return Counters(int(processed), int(failed), {name: int(count) for name, count in rows}, int(unmatched))

    def results(self, job_id: str) -> Iterator[ImageResult]:
        with self._lock, database_errors("reading a job's results"):
            rows = self._db.execute("SELECT payload FROM results WHERE job_id = ? ORDER BY name",
                                    (job_id,)).fetchall()
        for (payload,) in rows:
            yield ImageResult.from_dict(json.loads(payload))

    def latest_job_id(self) -> str | None:
        with self._lock, database_errors("finding the latest job"):
            row = self._db.execute("SELECT id FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT 1").fetchone()
        return row[0] if row else None


class InProcessQueue:
    """Pub/Sub's contract in one process: at-least-once delivery to a handler, retried with backoff on
    TransientError, like a push subscription retries a failing function. The handler decides what is transient
    (the classify_image use case raises nothing else but ConfigurationError); anything else is dead-lettered."""

    def __init__(self, workers: int = 2, max_attempts: int = 5, backoff: float = 0.2) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="classify")
        self._handler: Callable[[ClassifyMessage], object] | None = None
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._pending: set[Future[None]] = set()
        self._lock = threading.Lock()
        self.dead_letters: list[tuple[ClassifyMessage, str]] = []

    def subscribe(self, handler: Callable[[ClassifyMessage], object]) -> None:
        self._handler = handler

    def _deliver(self, message: ClassifyMessage) -> None:
        assert self._handler is not None, "no handler subscribed"
        for attempt in range(1, self._max_attempts + 1):
            try:
                self._handler(message)
                return
            except TransientError as exc:
                if attempt == self._max_attempts:
                    log.error("message dead-lettered", extra={"job_id": message.job_id, "object": message.name,
                                                              "error": str(exc)})
                    self.dead_letters.append((message, str(exc)))
                    return
                time.sleep(self._backoff * 2 ** (attempt - 1))
            except Exception as exc:  # misconfigured, or a bug: retrying cannot help
                log.exception("message handler failed", extra={"job_id": message.job_id, "object": message.name})
                self.dead_letters.append((message, repr(exc)))
                return

    def publish_all(self, messages: Iterable[ClassifyMessage]) -> int:
        count = 0
        for message in messages:
            future = self._pool.submit(self._deliver, message)
            with self._lock:
                self._pending.add(future)
            future.add_done_callback(self._forget)
            count += 1
        return count

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._pending.discard(future)

    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                pending = list(self._pending)
            if not pending:
                return True
            if deadline is not None and time.monotonic() > deadline:
                return False
            try:
                pending[0].exception(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                return False

    def shutdown(self, cancel: bool = True) -> None:
        self._pool.shutdown(wait=True, cancel_futures=cancel)
