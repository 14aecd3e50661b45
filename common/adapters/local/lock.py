"""One writer per folder: `run`, `watch`, `serve` and `undo` hold DIR/.imgclassify/lock while they work.

An advisory lock (flock) the kernel drops when its process ends, however it ends: a killed run never leaves the
folder locked. The holder's pid and command are written in the file so the refusal can name them.
"""
from __future__ import annotations

import fcntl
import json
import os
import stat
import time
from pathlib import Path

from common.adapters.local.state import StateFolder, UnsafeState
from common.domain.errors import Conflict


class FolderInUse(Conflict):
    """Another imgclassify process is writing to this folder."""


class FolderLock:
    def __init__(self, state_dir: str | os.PathLike[str], command: str) -> None:
        self._path = Path(state_dir) / "lock"
        self._command = command
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        with StateFolder(self._path.parent) as state:
            state.check_regular(self._path.name)
            fd = os.open(self._path.name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         0o644, dir_fd=state.fd)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UnsafeState(f"{self._path} is not a regular file: remove it and run again")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            folder = self._path.parent.parent
            raise FolderInUse(f"another imgclassify ({holder}) is working on {folder}: wait for it to finish or stop "
                              "it, then run this again", field="dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "command": self._command,
                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode())
        self._fd = fd
        return self

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            info = json.loads(os.pread(fd, 4096, 0) or b"{}")
            return f"`{info['command']}`, pid {info['pid']}, since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "a process that did not say which"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *_: object) -> None:
        self.release()
