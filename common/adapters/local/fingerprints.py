"""A folder's fingerprints cached by stat, as git's index caches blob ids: (path, size, mtime, ctime, inode, device)
-> the content fingerprint of the bytes read, in the folder's database (table `fingerprints`, keyed by path).

A listing stats each photo (no link followed, nothing read) and gives the recorded fingerprint of every photo whose
stat is unchanged since it was hashed, so a second question over a folder neither reads nor hashes an unchanged
photo. Any change of size, either time, inode or device invalidates the entry. Git's racy-timestamp rule: an entry
hashed in the same second as the file's mtime or before it is not trusted — a write in that second may not have
moved the times — and the photo is read and hashed again, which records it anew.

Fingerprints are recorded only from bytes the folder store read itself (`FolderObjectStore.read`, under its rules)
and only by a process that lists (a command that sorts): `report` and `status` never write here. Recording is
batched (one transaction per RECORD_BATCH photos or per second) and best effort: an entry lost in a crash is one
photo hashed again.
"""
from __future__ import annotations

import itertools
import os
import stat
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path

from common.adapters.local.sqlite import connect, database_errors
from common.domain.errors import ServiceError
from common.logs import get_logger
from common.ports import Listed

log = get_logger("local")

LOOKUP_BATCH = 500  # paths per query (SQLite allows 32,766 parameters)
RECORD_BATCH = 256
RECORD_SECONDS = 1.0
_SECOND = 1_000_000_000
CLOCK_TICK_NS = 100_000_000
DATABASE = "jobs.sqlite3"  # the folder's database, in its state folder

Walked = tuple[str, "os.DirEntry[str] | None"]  # (object name, its directory entry when it is a listed file)


def _identity(status: os.stat_result) -> tuple[int, int, int, int, int]:
    return status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino, status.st_dev


def trusted(recorded: tuple[int, int, int, int, int], hashed_ns: int, status: os.stat_result) -> bool:
    """Whether an entry still says what the file holds: the same stat, hashed in a later second than the file's
    mtime (git's racy rule: a write in that second may have left every time as it was). The ctime needs no such
    rule: a write moves the mtime too, and setting the mtime back (utime) moves the ctime, which is compared. The
    hashing time counts CLOCK_TICK_NS early: a file's times come from the kernel's coarse clock, which lags the
    wall clock by up to a tick."""
    return recorded == _identity(status) and (hashed_ns - CLOCK_TICK_NS) // _SECOND > status.st_mtime_ns // _SECOND


class FingerprintCache:
    def __init__(self, database: Path) -> None:
        self._db = connect(database)
        self._lock = threading.Lock()
        self._pending: list[tuple[object, ...]] = []
        self._flushed = time.monotonic()
        self.recording = False  # set by the first listing: only a process that sorts records what it reads

    @classmethod
    def of_folder(cls, database: Path, owner: object) -> FingerprintCache | None:
        """The folder's cache when the folder has a database (it has jobs), None for a folder only read from;
        closed (what was read last recorded) when its owner goes, or at exit."""
        if not database.is_file():
            return None
        try:
            cache = cls(database)
        except ServiceError as exc:  # a database refused or busy: the listing goes on without fingerprints
            log.warning("fingerprint cache unavailable", extra={"error": str(exc)})
            return None
        weakref.finalize(owner, cache.close)
        return cache

    def close(self) -> None:
        """Idempotent: the owner's close and its finalizer both call it."""
        self.flush()
        with self._lock:
            self._db.close()
            self.recording = False

    def listed(self, walked: Iterable[Walked]) -> Iterator[Listed]:
        """Each walked name, with its fingerprint when a trusted entry has it (one query per LOOKUP_BATCH)."""
        self.recording = True
        self.flush()
        walk = iter(walked)
        while batch := list(itertools.islice(walk, LOOKUP_BATCH)):
            stats = [(name, _path_of(entry), _lstat(entry)) for name, entry in batch]
            known = self._lookup([path for _, path, status in stats if status is not None])
            for name, path, status in stats:
                entry = known.get(path) if status is not None else None
                fresh = entry is not None and status is not None and trusted(entry[1], entry[2], status)
                yield Listed(name, entry[0] if entry is not None and fresh else None)

    def _lookup(self, paths: list[bytes]) -> dict[bytes, tuple[str, tuple[int, int, int, int, int], int]]:
        if not paths:
            return {}
        marks = ", ".join("?" * len(paths))
        try:
            with self._lock, database_errors("reading fingerprints"):
                rows = self._db.execute(f"SELECT path, size, mtime_ns, ctime_ns, inode, device, content, hashed_ns "
                                        f"FROM fingerprints WHERE path IN ({marks})", paths).fetchall()
        except ServiceError as exc:  # an optimisation: a miss reads the photo
            log.warning("fingerprints not read", extra={"error": str(exc)})
            return {}
        return {bytes(row[0]): (row[6], (row[1], row[2], row[3], row[4], row[5]), row[7]) for row in rows}

    def record(self, path: Path, status: os.stat_result, content: str, hashed_ns: int) -> None:
        """Remember what the file at path held when it had this stat (`hashed_ns`: when it was opened)."""
        if not self.recording or not stat.S_ISREG(status.st_mode):
            return
        with self._lock:
            self._pending.append((os.fsencode(path), *_identity(status), content, hashed_ns))
            due = len(self._pending) >= RECORD_BATCH or time.monotonic() - self._flushed >= RECORD_SECONDS
        if due:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._flushed = time.monotonic()
            if not pending:
                return
            try:
                with database_errors("recording fingerprints"):
                    self._db.execute("BEGIN IMMEDIATE")
                    try:
                        self._db.executemany("INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                             pending)
                        self._db.execute("COMMIT")
                    except BaseException:
                        self._db.execute("ROLLBACK")
                        raise
            except ServiceError as exc:  # lost: those photos are hashed again next time
                log.warning("fingerprints not recorded", extra={"error": str(exc), "photos": len(pending)})


def _path_of(entry: os.DirEntry[str] | None) -> bytes:
    return os.fsencode(entry.path) if entry is not None else b""


def _lstat(entry: os.DirEntry[str] | None) -> os.stat_result | None:
    """A listed regular file's own stat (never a link's target: a link's photo is read, under the reading rules)."""
    if entry is None:
        return None
    try:
        status = entry.stat(follow_symlinks=False)
    except OSError:
        return None
    return status if stat.S_ISREG(status.st_mode) else None


def now_ns() -> int:
    return time.time_ns()


__all__ = ["FingerprintCache", "Walked", "now_ns", "trusted"]
