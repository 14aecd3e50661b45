"""Files landing in a folder, as arrivals: filesystem events (watchdog), each file handed on once its size and
time have stopped changing (an upload still being written waits; one that never stops waits at most
MAX_SETTLE_SECONDS). A thread polls what is settling; `on_arrival` gets the object name ("all/<path>")."""
from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from common.logs import get_logger

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver

log = get_logger("arrivals")

SETTLE_SECONDS = 1.0
MAX_SETTLE_SECONDS = 300.0
POLL_SECONDS = 0.25


class FolderArrivals:
    def __init__(self, photos: Path, on_arrival: Callable[[str], object], prefix: str = "all/",
                 settle: float = SETTLE_SECONDS, max_settle: float = MAX_SETTLE_SECONDS) -> None:
        self._photos = photos
        self._on_arrival = on_arrival
        self._prefix = prefix
        self._settle = settle
        self._max_settle = max_settle
        # path -> ((size, mtime) last seen, when it last changed, when first seen)
        self._settling: dict[Path, tuple[tuple[int, int], float, float]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._observer: BaseObserver | None = None
        self._poller: threading.Thread | None = None

    def seen(self, path: Path) -> None:
        """A file was created, written or moved in (ignored: folders, hidden files and folders)."""
        try:
            relative = path.relative_to(self._photos)
        except ValueError:
            return
        if any(part.startswith(".") for part in relative.parts):
            return
        now = time.monotonic()
        with self._lock:
            self._settling.setdefault(path, ((-1, -1), now, now))

    def poll(self) -> None:
        """Hand on every file that has settled."""
        now = time.monotonic()
        with self._lock:
            pending = list(self._settling.items())
        for path, (seen, since, first) in pending:
            try:
                status = path.stat() if path.is_file() else None
            except OSError:
                status = None
            current = None if status is None else (status.st_size, status.st_mtime_ns)
            with self._lock:
                if current is None:
                    self._settling.pop(path, None)  # gone, or not a regular file
                    continue
                if current != seen and now - first < self._max_settle:
                    self._settling[path] = (current, now, first)
                    continue
                if now - since < self._settle and now - first < self._max_settle:
                    continue
                self._settling.pop(path, None)
            try:
                self._on_arrival(self._prefix + path.relative_to(self._photos).as_posix())
            except Exception:  # one file's trouble must not stop the watch
                log.exception("arrival not handled", extra={"object": str(path)})

    def start(self) -> FolderArrivals:
        """Start listening (before any listing, so nothing written meanwhile is missed: seen twice, counted once)."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        arrivals = self

        class Changes(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if not event.is_directory and event.event_type in ("created", "modified", "moved", "closed"):
                    arrivals.seen(Path(os.fsdecode(getattr(event, "dest_path", "") or event.src_path)))

        observer = Observer()
        observer.schedule(Changes(), str(self._photos), recursive=True)
        observer.start()
        self._observer = observer
        self._poller = threading.Thread(target=self._poll_until_stopped, name="arrivals", daemon=True)
        self._poller.start()
        return self

    def _poll_until_stopped(self) -> None:
        while not self._stopped.wait(POLL_SECONDS):
            self.poll()

    def stop(self) -> None:
        self._stopped.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
        if self._poller is not None:
            self._poller.join(timeout=5)
