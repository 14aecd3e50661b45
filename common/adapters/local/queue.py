"""Pub/Sub's contract in one process: a thread pool delivering messages, retried with backoff."""
from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from common.domain.errors import TransientError
from common.domain.messages import ClassifyMessage
from common.domain.retry import RetryPolicy
from common.logs import get_logger

log = get_logger("local")

GiveUp = Callable[[ClassifyMessage, str, bool], None]  # (message, reason, whether a later try may pass)
# Handles a few messages at once (their stored answers read in one query) and returns those it did not finish,
# which go through the one-at-a-time delivery with its retries.
BatchHandler = Callable[[Sequence[ClassifyMessage]], Sequence[ClassifyMessage]]
# Messages per delivery when a batch handler is subscribed: one query and one future per this many photos, small
# enough that two workers still share a short job evenly.
BATCH = 64


class InProcessQueue:
    """Pub/Sub's contract in one process: at-least-once delivery to a handler, retried with backoff on
    TransientError, like a push subscription retries a failing function. The handler decides what is transient
    (the classify_image use case raises nothing else but ConfigurationError); anything else is dead-lettered."""

    def __init__(self, workers: int = 2, max_attempts: int = 5, backoff: float = 0.2,
                 on_give_up: GiveUp | None = None) -> None:
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="classify")
        self._handler: Callable[[ClassifyMessage], object] | None = None
        self._batch: BatchHandler | None = None
        self._retry = RetryPolicy(max_attempts, backoff)
        # What to do with a message that cannot be delivered (the embedded runner records the image as failed
        # with the reason, so its job still finishes and says why).
        self._on_give_up = on_give_up
        self._pending: dict[Future[None], int] = {}  # each delivery and the messages it carries
        self._queued = 0
        self._lock = threading.Lock()

    def subscribe(self, handler: Callable[[ClassifyMessage], object], on_give_up: GiveUp | None = None,
                  batch: BatchHandler | None = None) -> None:
        self._handler = handler
        self._batch = batch
        if on_give_up is not None:
            self._on_give_up = on_give_up

    def _deliver_batch(self, messages: Sequence[ClassifyMessage]) -> None:
        assert self._batch is not None, "no batch handler subscribed"
        try:
            unfinished = self._batch(messages)
        except Exception:  # the batch's shared step failed: each message goes alone, with its own retries
            log.exception("batch delivery failed; delivering its messages one by one")
            unfinished = messages
        for message in unfinished:
            self._deliver(message)

    def _deliver(self, message: ClassifyMessage) -> None:
        assert self._handler is not None, "no handler subscribed"
        for attempt in range(1, self._retry.attempts + 1):
            try:
                self._handler(message)
                return
            except TransientError as exc:
                delay = self._retry.delay_after(attempt)
                if delay is None:
                    self._give_up(message, f"gave up after {attempt} attempts: {exc}", retryable=True)
                    return
                time.sleep(delay)
            except Exception as exc:  # misconfigured, or a bug: retrying cannot help
                log.exception("message handler failed", extra={"job_id": message.job_id, "object": message.name})
                self._give_up(message, str(exc) or repr(exc), retryable=False)
                return

    def _give_up(self, message: ClassifyMessage, reason: str, retryable: bool) -> None:
        log.error("message dead-lettered", extra={"job_id": message.job_id, "object": message.name,
                                                  "error": reason})
        if self._on_give_up is not None:
            try:
                self._on_give_up(message, reason, retryable)
            except Exception:
                log.exception("could not record the dead-lettered image", extra={"job_id": message.job_id})

    def publish_all(self, messages: Iterable[ClassifyMessage]) -> int:
        count = 0
        size = BATCH if self._batch is not None else 1
        iterator = iter(messages)
        while chunk := tuple(itertools.islice(iterator, size)):
            with self._lock:  # registered before it can finish, so join() never misses it
                future = self._pool.submit(self._deliver_batch, chunk) if self._batch is not None else \
                    self._pool.submit(self._deliver, chunk[0])
                self._pending[future] = len(chunk)
                self._queued += len(chunk)
            future.add_done_callback(self._forget)
            count += len(chunk)
        return count

    def backlog(self) -> int:
        """Messages published and not yet handled."""
        with self._lock:
            return self._queued

    def _forget(self, future: Future[None]) -> None:
        with self._lock:
            self._queued -= self._pending.pop(future, 0)

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
