"""Counting results at any throughput: each instance adds its results up in memory and commits them into shard
documents of its own (jobs/{id}/counter_shards/i-{instance}-{k}), one commit per COMMIT_SECONDS per job, rotating
over SHARDS_PER_INSTANCE documents: no document is written more than once a second whatever the number of
instances, a delivery waits a quarter of a second for its commit, and a status read is SHARDS_PER_INSTANCE
documents per instance that worked on the job.

Exactly once, as before: an image's result document is created once (the create() precondition), with
`tally_pending`; the commit that counts it removes that field, with a precondition on the document's update time,
in the same batch as the shard's increment — so an image is counted once, and only once its result is durable. A
delivery is acknowledged only after its commit (record() waits for it): an instance that dies before then leaves a
pending result and an unacknowledged message, whose redelivery finds the pending document and counts it.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from common.domain.results import Counters, ImageResult

SHARDS_PER_INSTANCE = 4
COMMIT_SECONDS = 1.0 / SHARDS_PER_INSTANCE  # each of an instance's shard documents: one commit a second
MAX_BATCH = 200  # results per commit (Firestore allows 500 writes per batch; one more for the shard)
PENDING = "tally_pending"


@dataclass
class _Item:
    ref: Any
    update_time: Any
    delta: Counters
    counted: threading.Event = field(default_factory=threading.Event)
    ok: bool = False
    error: BaseException | None = None


def increments(delta: Counters) -> dict[str, Any]:
    fields: dict[str, Any] = {"processed": firestore.Increment(delta.processed),
                              "failed": firestore.Increment(delta.failed),
                              "unmatched": firestore.Increment(delta.unmatched),
                              "from_store": firestore.Increment(delta.from_store),
                              "recomputed": firestore.Increment(delta.recomputed),
                              "last_result_at": firestore.SERVER_TIMESTAMP}
    if delta.matches:
        fields["matches"] = {name: firestore.Increment(n) for name, n in delta.matches.items()}
    if delta.corrected:
        fields["corrected"] = {name: firestore.Increment(n) for name, n in delta.corrected.items()}
    return fields


class ResultTallies:
    def __init__(self, client: firestore.Client, jobs: Any, flush_seconds: float = COMMIT_SECONDS,
                 instance: str | None = None, shards: int = SHARDS_PER_INSTANCE) -> None:
        self._client = client
        self._jobs = jobs  # the jobs collection
        self._flush_seconds = flush_seconds
        self.shard_prefix = f"i-{instance or uuid.uuid4().hex[:16]}"
        self._shards = shards
        self._rotation: dict[str, int] = {}  # job -> its next shard document
        self._lock = threading.Lock()
        self._pending: dict[str, list[_Item]] = {}
        self._queued: dict[str, _Item] = {}  # by result document: each counted by one item of this instance
        self._flushing: set[str] = set()
        self._last_flush: dict[str, float] = {}
        self.commits = 0  # batches committed by this instance (the load benchmark reads it)
        # Called with the job's id after each commit that counted something: completion is checked once per
        # commit (at most once a second per instance), not after every image.
        self.on_counted: Any = None

    def record(self, job_id: str, result: ImageResult, ref: Any) -> bool:
        """Create the result and wait until it is counted. False when it was already counted (a redelivery)."""
        try:
            written = ref.create({**result.to_dict(), PENDING: True})
            item = _Item(ref, written.update_time, Counters.of(result))
        except (gexc.Conflict, gexc.AlreadyExists):
            with self._lock:
                queued = self._queued.get(ref.path)
            if queued is not None:  # a concurrent delivery here created it and is counting it: a duplicate
                queued.counted.wait()
                return False
            snapshot = ref.get()
            data = snapshot.to_dict() or {}
            if not snapshot.exists or not data.get(PENDING):
                return False  # counted already
            # Created by a delivery whose instance died before counting it: this redelivery counts it.
            item = _Item(ref, snapshot.update_time, Counters.of(ImageResult.from_dict(data)))
        self._enqueue_and_wait(job_id, item)
        return item.ok

    def _enqueue_and_wait(self, job_id: str, item: _Item) -> None:
        with self._lock:
            if item.ref.path in self._queued:  # raced another delivery of the same image here
                other = self._queued[item.ref.path]
            else:
                other = None
                self._queued[item.ref.path] = item
                self._pending.setdefault(job_id, []).append(item)
        if other is not None:
            other.counted.wait()
            return
        while not item.counted.is_set():
            with self._lock:
                lead = job_id not in self._flushing
                if lead:
                    self._flushing.add(job_id)
            if not lead:
                item.counted.wait(0.05)
                continue
            try:
                # At most one commit per COMMIT_SECONDS for the job (each of its shard documents once a second);
                # the deliveries that arrive meanwhile join the batch.
                wait = self._last_flush.get(job_id, 0.0) + self._flush_seconds - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self._flush(job_id)
            finally:
                with self._lock:
                    self._flushing.discard(job_id)
        if item.error is not None:
            raise item.error

    def _flush(self, job_id: str) -> None:
        with self._lock:
            items = self._pending.get(job_id, [])[:MAX_BATCH]
            self._pending[job_id] = self._pending.get(job_id, [])[len(items):]
        if not items:
            return
        try:
            self._commit(job_id, items)
            for item in items:
                item.ok = True
        except gexc.FailedPrecondition:
            # Another delivery of one of them counted it first (a redelivery racing a slow instance): count each
            # alone, so only that one is left out.
            for item in items:
                try:
                    self._commit(job_id, [item])
                    item.ok = True
                except gexc.FailedPrecondition:
                    item.ok = False
                except Exception as exc:  # noqa: BLE001 - handed to the waiting delivery, which redelivers
                    item.error = exc
        except Exception as exc:  # noqa: BLE001 - every waiting delivery must hear of it
            for item in items:
                item.error = exc
        finally:
            self._last_flush[job_id] = time.monotonic()
            with self._lock:
                for item in items:
                    self._queued.pop(item.ref.path, None)
            for item in items:
                item.counted.set()
        if self.on_counted is not None and any(item.ok for item in items):
            self.on_counted(job_id)

    def _commit(self, job_id: str, items: list[_Item]) -> None:
        total = Counters()
        batch = self._client.batch()
        for item in items:
            batch.update(item.ref, {PENDING: firestore.DELETE_FIELD},
                         option=self._client.write_option(last_update_time=item.update_time))
            total.add(item.delta)
        turn = self._rotation.get(job_id, 0)
        self._rotation[job_id] = turn + 1
        shard = self._jobs.document(job_id).collection("counter_shards").document(
            f"{self.shard_prefix}-{turn % self._shards}")
        batch.set(shard, increments(total), merge=True)
        batch.commit()
        self.commits += 1
