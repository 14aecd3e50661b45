"""Embedded adapters: a folder is the bucket, SQLite is the job store, a thread pool is the queue."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from common.domain.errors import ConfigurationError, ObjectMissing, PermanentImageError, TransientError
from common.domain.jobs import MAX_IMAGE_BYTES, JobRecord, JobSpec, collision_names
from common.domain.messages import ClassifyMessage
from common.domain.results import Counters, ImageResult
from common.logs import get_logger
from common.domain.predictions import content_fingerprint
from common.ports import Copied, Listed

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
    """Objects are files under root; names use '/' whatever the OS. The bucket name is ignored: root is the bucket.

    `sources` maps a prefix to the folder its photos are read from (`all/` -> the folder `DIR/all` points to, or
    the PHOTOS of `run PHOTOS --out SORTED`): photos may live behind a link or elsewhere, copies are only ever
    written under root, never through a symbolic link, never into a source folder, and never over a file that
    holds other bytes. Only regular files are listed and read; sizes are checked before reading.
    """

    def __init__(self, root: str | os.PathLike[str], sources: Mapping[str, str | os.PathLike[str]] | None = None,
                 max_bytes: int = MAX_IMAGE_BYTES) -> None:
        self.root = Path(root).resolve()
        self.sources = {prefix: Path(folder).resolve() for prefix, folder in (sources or {}).items()}
        self.max_bytes = max_bytes
        self._unlistable: dict[str, str] = {}  # folders the listing could not enter, and why
        # Files are written here, then linked into place: a killed run leaves no half photo, and no stray
        # temporary file, in the user's folders. Same filesystem as root, so the link is atomic.
        self._tmp = self.root / STATE_DIR / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        stale = time.time() - 600  # older than any write in flight, even from another process on this folder
        for leftover in self._tmp.iterdir():
            if leftover.stat().st_mtime < stale:
                leftover.unlink(missing_ok=True)

    # --- reading --------------------------------------------------------------------------------------------
    def _source(self, name: str) -> tuple[Path, Path]:
        """(folder the name is read from, path of the name in it)."""
        for prefix, folder in self.sources.items():
            if name.startswith(prefix):
                return folder, folder / name[len(prefix):]
        return self.root, self.root / name

    def _readable_path(self, name: str) -> Path:
        base, path = self._source(name)
        resolved = Path(os.path.realpath(path))  # a link loop resolves to itself here; opening it says why
        if not (resolved.is_relative_to(base) or resolved.is_relative_to(self.root)) or resolved == self.root:
            raise ObjectMissing(name)  # names come from messages: never let one point outside the folders
        return path

    def list_names(self, bucket: str, prefix: str) -> Iterator[str]:
        base, folder = self._source(prefix)
        if not folder.is_dir():
            return
        denied: list[OSError] = []
        for directory, subdirs, files in os.walk(folder, onerror=denied.append):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for file in sorted(files):
                path = Path(directory, file)
                # Regular files, and links (a broken or looping one fails with its reason when read); never
                # pipes, sockets or devices, which would block or mean nothing.
                if file.startswith(".") or not (path.is_file() or path.is_symlink()):
                    continue
                yield prefix + path.relative_to(folder).as_posix()
        # A folder that could not be entered still counts, as one failed "image" saying why.
        for error in denied:
            if error.filename and Path(error.filename) != folder:
                name = prefix + Path(error.filename).relative_to(folder).as_posix()
                self._unlistable[name] = error.strerror or str(error)
                yield name

    def list_objects(self, bucket: str, prefix: str) -> Iterator[Listed]:
        # No fingerprint without reading: classify_image reads a local photo anyway, and hashes it then.
        return (Listed(name) for name in self.list_names(bucket, prefix))

    def read(self, bucket: str, name: str) -> bytes:
        data, _ = self._read(name)
        return data

    def remove(self, bucket: str, name: str, content: str) -> str:
        path = self.root / name
        with file_errors("cannot remove", name):
            if not os.path.lexists(path):
                return "missing"
            if path.is_symlink() or not path.is_file() or content_fingerprint(path.read_bytes()) != content:
                return "changed"
            path.unlink()
            folder = path.parent
            # Class folders the removal left empty go too; never the root, nor a folder holding anything.
            while folder != self.root and folder.is_relative_to(self.root) and not any(folder.iterdir()):
                folder.rmdir()
                folder = folder.parent
        return "removed"

    def _read(self, name: str) -> tuple[bytes, os.stat_result]:
        if name in self._unlistable:
            raise PermanentImageError(f"folder {name} could not be listed: {self._unlistable[name]}")
        path = self._readable_path(name)
        with file_errors("cannot read", name):
            # Non-blocking: opening a FIFO for reading must not wait for a writer.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                status = os.fstat(handle.fileno())
                if stat.S_ISDIR(status.st_mode):
                    raise PermanentImageError(f"{name} is a folder")
                if not stat.S_ISREG(status.st_mode):
                    raise PermanentImageError(f"{name} is not a regular file (a pipe, socket or device)")
                if status.st_size > self.max_bytes:
                    raise PermanentImageError(f"file is {status.st_size} bytes, above the {self.max_bytes}-byte "
                                              "limit for an image")
                data = handle.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:  # it grew while being read
            raise PermanentImageError(f"file is larger than the {self.max_bytes}-byte limit for an image")
        return data, status

    # --- writing --------------------------------------------------------------------------------------------
    def _writable_folder(self, name: str) -> Path:
        """The real folder under root that name goes in, created as needed; refuses links and files in the way."""
        folder = self.root
        for part in name.split("/")[:-1]:
            if part in ("", ".", ".."):
                raise ObjectMissing(name)
            folder = folder / part
            relative = folder.relative_to(self.root).as_posix()
            if folder.is_symlink():
                raise PermanentImageError(f"{relative} is a symbolic link: copies are never written through links "
                                          "(make it a real folder)")
            if folder.exists() and not folder.is_dir():
                raise PermanentImageError(f"{relative} exists and is not a folder: rename it or choose another "
                                          "class name")
            try:
                folder.mkdir(exist_ok=True)
            except FileExistsError:  # became a file or link between the checks
                raise PermanentImageError(f"{relative} exists and is not a folder") from None
        resolved = folder.resolve()
        if not resolved.is_relative_to(self.root) or any(resolved.is_relative_to(s) for s in self.sources.values()):
            raise PermanentImageError(f"{name} would be written outside the output folder or among the photos")
        return folder

    def _create(self, path: Path, data: bytes, like: os.stat_result | None) -> bool:
        """Write path only if nothing is there; False if something is. Mode and times follow `like`."""
        fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="partial-")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            if like is not None:
                os.chmod(tmp, stat.S_IMODE(like.st_mode))
                os.utime(tmp, ns=(like.st_atime_ns, like.st_mtime_ns))
            try:
                os.link(tmp, path)  # atomic, and fails if the name exists: never replaces anything
            except FileExistsError:
                return False
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    @staticmethod
    def _holds(path: Path, data: bytes) -> bool:
        status = path.lstat()
        return stat.S_ISREG(status.st_mode) and status.st_size == len(data) and path.read_bytes() == data

    def copy(self, bucket: str, source: str, target: str, content: str | None = None) -> Copied:
        data, status = self._read(source)  # the bytes are needed to write the copy: the hint saves nothing here
        with file_errors("cannot copy to", target):
            folder = self._writable_folder(target)
            for candidate in collision_names(target):
                path = folder / candidate.rpartition("/")[2]
                if not os.path.lexists(path) and self._create(path, data, status):
                    return Copied(candidate, written=True)
                if self._holds(path, data):  # this service's copy, from an earlier delivery or job
                    return Copied(candidate, written=False)
        raise PermanentImageError(f"{len(collision_names(target))} different files are already named like {target}:"
                                  " none is replaced")

    def write(self, bucket: str, name: str, data: bytes) -> None:
        """Upload (tests, `emulate --upload`): replaces name, but never through a link."""
        with file_errors("cannot write", name):
            path = self._writable_folder(name) / name.rpartition("/")[2]
            fd, tmp = tempfile.mkstemp(dir=self._tmp, prefix="partial-")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                os.replace(tmp, path)
            finally:
                Path(tmp).unlink(missing_ok=True)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, spec TEXT NOT NULL, number_of_files INTEGER, created_at TEXT NOT NULL,
    request_id TEXT, error TEXT, errors TEXT, closed INTEGER, callback TEXT);
CREATE TABLE IF NOT EXISTS arrivals (job_id TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (job_id, name));
CREATE TABLE IF NOT EXISTS completions (job_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT NOT NULL, name TEXT NOT NULL, ok INTEGER NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (job_id, name));
"""


def _db_name(name: str) -> str:
    """Object names as SQLite can store them: a file name that is not valid UTF-8 reaches us with surrogate
    escapes, which SQLite's UTF-8 text cannot hold; they are stored as backslash escapes instead."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class SqliteJobStore:
    """Counters are aggregates over the results table, so they are exact by construction: the primary key makes
    each image count once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ConfigurationError(f"{path} is not a readable job database ({exc}): move it aside (the job "
                                     "history in it is lost; photos and copies are not touched) and run "
                                     "again") from None

    def _open(self) -> None:
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
            for column in ("request_id", "error", "errors", "closed", "callback"):  # older databases lack these
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
            row = self._db.execute("SELECT spec, number_of_files, created_at, request_id, error, errors, closed, "
                                   "callback FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else self._record(job_id, row)

    @staticmethod
    def _record(job_id: str, row: tuple) -> JobRecord:
        return JobRecord(job_id, JobSpec.from_dict(json.loads(row[0])), row[1], row[2], row[3], row[4],
                         tuple(json.loads(row[5] or "[]")), bool(row[6]), json.loads(row[7]) if row[7] else None)

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
                                    "callback FROM jobs WHERE json_extract(spec, '$.watch') = 1 AND "
                                    "COALESCE(closed, 0) = 0").fetchall()
        jobs = [self._record(row[0], row[1:]) for row in rows]
        return [job for job in jobs if job.spec.bucket == bucket]

    def results_count(self, job_id: str) -> int:
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
            cursor = self._db.execute("INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?)",
                                      (job_id, _db_name(result.name), int(result.ok), json.dumps(result.to_dict())))
            return cursor.rowcount == 1

    def counters(self, job_id: str) -> Counters:
        with self._lock, database_errors("reading a job's counters"):
            processed, failed, unmatched, from_store, recomputed = self._db.execute(
                "SELECT COALESCE(SUM(ok), 0), COALESCE(SUM(1 - ok), 0), "
                "COALESCE(SUM(ok AND json_array_length(payload, '$.matched') = 0), 0), "
                "COALESCE(SUM(json_extract(payload, '$.prediction') = 'store'), 0), "
                "COALESCE(SUM(json_extract(payload, '$.prediction') = 'recomputed'), 0) "
                "FROM results WHERE job_id = ?", (job_id,)).fetchone()
            rows = self._db.execute(
                "SELECT m.value, COUNT(*) FROM results, json_each(results.payload, '$.matched') AS m "
                "WHERE results.job_id = ? GROUP BY m.value", (job_id,)).fetchall()
            arrived = self._db.execute("SELECT COUNT(*) FROM arrivals WHERE job_id = ?", (job_id,)).fetchone()[0]
        return Counters(int(processed), int(failed), {name: int(count) for name, count in rows}, int(unmatched),
                        int(from_store), int(recomputed), int(arrived))

    def results(self, job_id: str) -> Iterator[ImageResult]:
        with self._lock, database_errors("reading a job's results"):
            rows = self._db.execute("SELECT payload FROM results WHERE job_id = ? ORDER BY name",
                                    (job_id,)).fetchall()
        for (payload,) in rows:
            yield ImageResult.from_dict(json.loads(payload))

    def job_ids(self) -> list[str]:
        """Every job, oldest first."""
        with self._lock, database_errors("listing jobs"):
            return [row[0] for row in self._db.execute("SELECT id FROM jobs ORDER BY created_at, rowid")]

    def latest_job_id(self) -> str | None:
        with self._lock, database_errors("finding the latest job"):
            row = self._db.execute("SELECT id FROM jobs ORDER BY created_at DESC, rowid DESC LIMIT 1").fetchone()
        return row[0] if row else None


class JsonLinesEvents:
    """Job events, embedded: one JSON line each in DIR/.imgclassify/events.jsonl."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()

    def publish_event(self, event: dict[str, object]) -> None:
        with self._lock, open(self._path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(event) + "\n")


class SqlitePredictionStore:
    """Stored predictions beside the jobs (DIR/.imgclassify/jobs.sqlite3, table predictions)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        try:
            with self._lock:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("CREATE TABLE IF NOT EXISTS predictions (model TEXT NOT NULL, content TEXT NOT NULL, "
                                 "prediction BLOB NOT NULL, PRIMARY KEY (model, content))")
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise ConfigurationError(f"{path} is not a readable job database ({exc}): move it aside and run "
                                     "again") from None

    def get(self, model: str, content: str) -> bytes | None:
        with self._lock, database_errors("reading a stored prediction"):
            row = self._db.execute("SELECT prediction FROM predictions WHERE model = ? AND content = ?",
                                   (model, content)).fetchone()
        return bytes(row[0]) if row else None

    def put(self, model: str, content: str, prediction: bytes) -> None:
        with self._lock, database_errors("storing a prediction"):
            self._db.execute("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?)", (model, content, prediction))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class InProcessQueue:
    """Pub/Sub's contract in one process: at-least-once delivery to a handler, retried with backoff on
    TransientError, like a push subscription retries a failing function. The handler decides what is transient
    (the classify_image use case raises nothing else but ConfigurationError); anything else is dead-lettered."""

    def __init__(self, workers: int = 2, max_attempts: int = 5, backoff: float = 0.2,
                 on_give_up: Callable[[ClassifyMessage, str], None] | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="classify")
        self._handler: Callable[[ClassifyMessage], object] | None = None
        self._max_attempts = max_attempts
        self._backoff = backoff
        # What to do with a message that cannot be delivered (the embedded runner records the image as failed
        # with the reason, so its job still finishes and says why).
        self._on_give_up = on_give_up
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
                    self._give_up(message, f"gave up after {attempt} attempts: {exc}")
                    return
                time.sleep(self._backoff * 2 ** (attempt - 1))
            except Exception as exc:  # misconfigured, or a bug: retrying cannot help
                log.exception("message handler failed", extra={"job_id": message.job_id, "object": message.name})
                self._give_up(message, str(exc) or repr(exc))
                return

    def _give_up(self, message: ClassifyMessage, reason: str) -> None:
        log.error("message dead-lettered", extra={"job_id": message.job_id, "object": message.name,
                                                  "error": reason})
        self.dead_letters.append((message, reason))
        if self._on_give_up is not None:
            try:
                self._on_give_up(message, reason)
            except Exception:
                log.exception("could not record the dead-lettered image", extra={"job_id": message.job_id})

    def publish_all(self, messages: Iterable[ClassifyMessage]) -> int:
        count = 0
        for message in messages:
            future = self._pool.submit(self._deliver, message)
            with self._lock:
                self._pending.add(future)
            future.add_done_callback(self._forget)
            count += 1
        return count

    def backlog(self) -> int:
        """Messages published and not yet handled."""
        with self._lock:
            return len(self._pending)

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
