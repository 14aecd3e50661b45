"""The one filesystem boundary for a folder's own state (DIR/.imgclassify): every file in it is reached from an open
descriptor of the state folder, which was itself opened without following a link, and no file in it is ever
followed through a link. Nothing under DIR is trusted to be what it was a moment ago:

- a write is a new file (O_CREAT | O_EXCL | O_NOFOLLOW) renamed over the old name in the same folder: a link put
  at the name is replaced, never written through;
- an append opens the name with O_NOFOLLOW and keeps it only if it is a regular file (O_NONBLOCK: a FIFO put there
  can never block a command);
- a tidy-up removes only regular files of its own naming from its own folder, never following a link or leaving it;
- SQLite opens the database through the state folder's descriptor, after checking that the database and its
  journal, WAL and shared-memory files are regular files or absent, and again once it has them open.

The state folder is created private (0700): other local users of DIR cannot place anything in it.
"""
from __future__ import annotations

import contextlib
import errno
import io
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from common.domain.errors import ConfigurationError

_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
SQLITE_SIDE_FILES = ("", "-wal", "-shm", "-journal")
MAX_STATE_FILE_BYTES = 1 << 20  # settings and other small files read whole


class UnsafeState(ConfigurationError):
    """Something in the state folder is a link or not what imgclassify put there: nothing is done through it."""


def _refusal(path: Path, what: str) -> UnsafeState:
    return UnsafeState(f"{path} {what}: imgclassify never follows links or writes through other kinds of files in "
                       "its state folder; remove it and run again")


def open_folder(name: str, parent_fd: int, shown: Path, create: bool) -> int:
    """A folder in parent_fd, opened without following a link; made private (0700) when created."""
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=parent_fd)
    try:
        return os.open(name, _FOLDER, dir_fd=parent_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            kind = os.lstat(name, dir_fd=parent_fd).st_mode
            raise _refusal(shown, "is a symbolic link" if stat.S_ISLNK(kind) else "is not a folder") from None
        raise


class StateFolder:
    """An open state folder (the last component of `path`, reached from its parent, which the user named)."""

    def __init__(self, path: str | os.PathLike[str], create: bool = True) -> None:
        self.path = Path(path)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        parent = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self.fd = open_folder(self.path.name, parent, self.path, create)
        finally:
            os.close(parent)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> StateFolder:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.close()

    def subfolder(self, name: str) -> int:
        """A folder of its own inside (a new descriptor: the caller closes it)."""
        return open_folder(name, self.fd, self.path / name, create=True)

    def _kind(self, name: str) -> int | None:
        try:
            return os.lstat(name, dir_fd=self.fd).st_mode
        except FileNotFoundError:
            return None

    def check_regular(self, name: str) -> None:
        """Raise unless name is absent or a regular file (not a link, FIFO, socket, device or folder)."""
        kind = self._kind(name)
        if kind is not None and not stat.S_ISREG(kind):
            raise _refusal(self.path / name, "is a symbolic link" if stat.S_ISLNK(kind) else "is not a regular file")

    # --- files ---------------------------------------------------------------------------------------------------
    def read_bytes(self, name: str, limit: int = MAX_STATE_FILE_BYTES) -> bytes | None:
        """The file's bytes; None when it is absent, not a regular file, a link, or larger than limit."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as handle:
            status = os.fstat(fd)
            if not stat.S_ISREG(status.st_mode) or status.st_size > limit:
                return None
            return handle.read(limit + 1)[:limit]

    def write_atomic(self, name: str, data: bytes, mode: int = 0o644) -> None:
        """Replace name with data: a new file renamed over it (a link there is replaced, never followed)."""
        partial = f".{name}.{secrets.token_hex(6)}.partial"
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode,
                     dir_fd=self.fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(partial, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(partial, dir_fd=self.fd)

    def open_append(self, name: str) -> IO[str]:
        """A text stream appending to name, a regular file opened without following a link (made if absent)."""
        try:
            fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         0o644, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                self.check_regular(name)
                raise _refusal(self.path / name, "is not a regular file") from None
            raise
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise _refusal(self.path / name, "is not a regular file")
        os.set_blocking(fd, True)
        return io.TextIOWrapper(io.FileIO(fd, "a"), encoding="utf-8", line_buffering=True)

    def rotate(self, name: str, max_bytes: int, keep: int) -> bool:
        """When name is a regular file over max_bytes: name.{keep-1} -> name.{keep}, …, name -> name.1 (renames in
        this folder: a link is moved as itself, never followed; the oldest generation is replaced). Whether it
        rotated."""
        kind = self._kind(name)
        if kind is None or not stat.S_ISREG(kind) or os.lstat(name, dir_fd=self.fd).st_size <= max_bytes:
            return False
        for generation in range(keep - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.replace(f"{name}.{generation}", f"{name}.{generation + 1}", src_dir_fd=self.fd,
                           dst_dir_fd=self.fd)
        os.replace(name, f"{name}.1", src_dir_fd=self.fd, dst_dir_fd=self.fd)
        return True

    def database(self, name: str) -> str:
        """The path SQLite should open name by — through this folder's descriptor where the system has one — once
        the database and its side files are known to be regular files or absent."""
        self.check_database(name)
        through_fd = Path(f"/proc/self/fd/{self.fd}")
        return str(through_fd / name) if through_fd.is_dir() else str(self.path / name)

    def check_database(self, name: str) -> None:
        """After SQLite opened (and maybe created) its files: none of them is a link or anything else."""
        for suffix in SQLITE_SIDE_FILES:
            self.check_regular(name + suffix)


def tidy(folder_fd: int, prefix: str, older_than: float) -> int:
    """Remove this folder's regular files named prefix* last changed more than older_than seconds ago; nothing
    else (no link is followed, no other folder entered). How many were removed."""
    stale, removed = time.time() - older_than, 0
    for entry in _entries(folder_fd):
        if not entry.startswith(prefix):
            continue
        with contextlib.suppress(OSError):
            status = os.lstat(entry, dir_fd=folder_fd)
            if stat.S_ISREG(status.st_mode) and status.st_mtime < stale:
                os.unlink(entry, dir_fd=folder_fd)
                removed += 1
    return removed


def _entries(folder_fd: int) -> Iterator[str]:
    with os.scandir(folder_fd) as scan:
        yield from [entry.name for entry in scan]
