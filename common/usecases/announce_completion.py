"""Announce a job's completion exactly once: an event on the job-events topic, and — when the job asked for one —
its callback, handed to the background (DeliverCallback) so that whoever records the last image returns at once.
Whoever records a job's last image calls this; the sharded counters cannot say who was last, so a completion
marker created once (a precondition) decides who announces."""
from __future__ import annotations

import functools
from typing import Any

from common.domain.jobs import JobRecord
from common.domain.status import status_view
from common.logs import get_logger
from common.ports import BackgroundWork, CompletionClaims, EventPublisher
from common.usecases.deliver_callback import SIGNATURE_HEADER, DeliverCallback, signature

log = get_logger("announce_completion")

__all__ = ["SIGNATURE_HEADER", "AnnounceCompletion", "signature"]

EVENT_FIELDS = ("job_id", "state", "number_of_files", "processed", "failed", "matches")


class AnnounceCompletion:
    def __init__(self, jobs: CompletionClaims, events: EventPublisher | None, deliver: DeliverCallback | None,
                 background: BackgroundWork | None) -> None:
        self._jobs = jobs
        self._events = events
        self._deliver = deliver
        self._background = background
        # A batch job's record does not change once its total is known: remember it instead of reading it after
        # every image (bounded: the jobs an instance is working on now).
        self._settled: dict[str, JobRecord] = {}

    def __call__(self, job_id: str) -> bool:
        """Announce the job if it is complete and nobody has; True when this call announced it."""
        job = self._settled.get(job_id) or self._jobs.get_job(job_id)
        if job is not None and job.number_of_files is not None and not job.spec.watch and not job.error:
            if len(self._settled) > 256:
                self._settled.clear()
            self._settled[job_id] = job
        # Cheap answers first. Embedded this runs after every image (an SQL sum); in the cloud after each of an
        # instance's commits (a shard document per instance), never as a count over the results.
        if job is None or job.number_of_files is None or job.error or (job.spec.watch and not job.closed):
            return False
        if not job.spec.watch and self._jobs.done_count(job_id) < job.number_of_files:
            return False  # one aggregation; the counters (a document per shard) only once it may be complete
        view = status_view(job, self._jobs.counters(job_id))
        if not view.complete or not self._jobs.claim_completion(job_id):
            return False
        event = {"job_id": job_id, **{k: view.body[k] for k in EVENT_FIELDS if k != "job_id"}}
        if self._events is not None:
            try:
                self._events.publish_event(event)
            except Exception:  # the job is complete either way; the event is best effort after the claim
                log.exception("job-events publish failed", extra={"job_id": job_id})
        log.info("job complete", extra=event)
        if job.spec.callback_url and self._deliver is not None and self._background is not None:
            self._send_later(job_id, job.spec.callback_url, {**view.to_dict(), "code": 200})
        return True

    def _send_later(self, job_id: str, url: str, status: dict[str, Any]) -> None:
        assert self._deliver is not None and self._background is not None
        self._jobs.record_callback(job_id, {"status": "pending", "attempts": 0})
        if not self._background.submit(functools.partial(self._deliver, job_id, url, status)):
            self._jobs.record_callback(job_id, {"status": "failed", "attempts": 0,
                                                "error": "too many callbacks waiting to be sent: not sent"})
