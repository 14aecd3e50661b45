"""A job's copy manifest on Firestore, changed only by compare-and-set: a result document's `copies` and `written`
are read, changed and written back with a precondition on the document's update time, retried (after a jittered,
growing pause) when another writer changed it in between. Transactions would serialise the same way, but the
emulator (and the client's immediate retries) livelock under dozens of concurrent corrections of one photo.

A job is undone once: the `markers/undone` document is created exactly once (its create() is the claim), and the
job's `undone_at` field follows for queries."""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from common.domain.errors import TransientError
from common.domain.results import ImageResult

DEADLINE_SECONDS = 30.0


def _compare_and_set(client: firestore.Client, ref: Any,
                     change: Callable[[ImageResult], ImageResult | None]) -> ImageResult | None:
    """Apply change to the result as the document holds it when the write lands; the result before the change
    that landed (None: no such result). A change returning None writes nothing."""
    pause, deadline = 0.01, time.monotonic() + DEADLINE_SECONDS
    while True:
        snapshot = ref.get()
        if not snapshot.exists:
            return None
        before = ImageResult.from_dict(snapshot.to_dict() or {})
        after = change(before)
        if after is None:
            return before
        try:
            ref.update({"copies": list(after.copies), "written": list(after.written),
                        "identities": dict(after.identities)},
                       option=client.write_option(last_update_time=snapshot.update_time))
            return before
        except (gexc.FailedPrecondition, gexc.Aborted, gexc.Conflict) as exc:
            if time.monotonic() + pause > deadline:
                raise TransientError(f"a job's manifest is busy: {exc}") from exc
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.5)


def _undone_marker(job: Any) -> Any:
    return job.collection("markers").document("undone")


def undone_at(job: Any) -> str | None:
    snapshot = _undone_marker(job).get()
    return str((snapshot.to_dict() or {}).get("at")) if snapshot.exists else None


def claim_copy(client: firestore.Client, job: Any, ref: Any, copy: str, written: bool, identity: str) -> bool:
    """Checked against the undo marker before and after: an undo that began meanwhile may have read the results
    before this copy was added, so the copy is taken out again and the caller removes what it wrote."""
    if undone_at(job) is not None:
        return False
    if _compare_and_set(client, ref, lambda result: result.claimed(copy, written, identity)) is None:
        return False
    if undone_at(job) is not None:
        _compare_and_set(client, ref, lambda result: result.released(copy) if copy in result.copies else None)
        return False
    return True


def release_copy(client: firestore.Client, ref: Any, copy: str) -> bool:
    before = _compare_and_set(client, ref, lambda result: result.released(copy) if copy in result.copies else None)
    return before is not None and copy in before.written


def record_undo(job: Any, at: str) -> bool:
    try:
        _undone_marker(job).create({"at": at})
    except (gexc.Conflict, gexc.AlreadyExists):
        return False
    job.update({"undone_at": at})
    return True
