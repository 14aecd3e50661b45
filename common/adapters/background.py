"""Work done off the request and classification paths (completion callbacks): a few daemon threads and a bounded
queue. Full means refused at once, never a wait."""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

from common.logs import get_logger

log = get_logger("background")


class BoundedWorkers:
    def __init__(self, workers: int = 2, max_pending: int = 256) -> None:
        self._queue: queue.Queue[Callable[[], object]] = queue.Queue(maxsize=max_pending)
        self._busy = 0
        self._lock = threading.Lock()
        for number in range(workers):
            threading.Thread(target=self._work, name=f"background-{number}", daemon=True).start()

    def submit(self, task: Callable[[], object]) -> bool:
        try:
            self._queue.put_nowait(task)
        except queue.Full:
            return False
        return True

    def _work(self) -> None:
        while True:
            task = self._queue.get()
            with self._lock:
                self._busy += 1
            try:
                task()
            except Exception:  # one failed task must not stop the worker
                log.exception("background task failed")
            finally:
                with self._lock:
                    self._busy -= 1
                self._queue.task_done()

    def drain(self, timeout: float) -> bool:
        """Wait (at most timeout seconds) for the queued work to finish; True if it did. For a process about to
        exit: `run` gives its callback a bounded chance to be delivered."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._queue.unfinished_tasks == 0:
                    return True
            time.sleep(0.05)
        return False
