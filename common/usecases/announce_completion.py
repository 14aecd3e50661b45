"""Announce a job's completion exactly once: an event on the job-events topic, and — when the job asked for one —
an HTTP POST of its final status to its callback_url, signed, retried with backoff, then given up and recorded on
the job. Whoever records a job's last image calls this; the sharded counters cannot say who was last, so a
completion marker created once (a precondition) decides who announces."""
from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

from common.domain.errors import TransientError
from common.domain.jobs import JobRecord, status_view
from common.logs import get_logger
from common.ports import CallbackSender, EventPublisher, JobWriter

log = get_logger("announce_completion")

SIGNATURE_HEADER = "X-Imgclassify-Signature"  # "sha256=<hex HMAC-SHA256 of the body with SERVICE_KEY>"
EVENT_FIELDS = ("job_id", "state", "number_of_files", "processed", "failed", "matches")


def signature(body: bytes, key: str) -> str:
    return "sha256=" + hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


class AnnounceCompletion:
    def __init__(self, jobs: JobWriter, events: EventPublisher | None, callbacks: CallbackSender | None,
                 service_key: str = "", attempts: int = 4, backoff: float = 1.0, timeout: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self._jobs = jobs
        self._events = events
        self._callbacks = callbacks
        self._key = service_key
        self._attempts = attempts
        self._backoff = backoff
        self._timeout = timeout
        self._sleep = sleep
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
        # Cheap answers first: this runs after every image, and the counters are 16 documents in the cloud.
        if job is None or job.number_of_files is None or job.error or (job.spec.watch and not job.closed):
            return False
        if not job.spec.watch and self._jobs.results_count(job_id) < job.number_of_files:
            return False
        view = status_view(job, self._jobs.counters(job_id))
        if not view["complete"] or not self._jobs.claim_completion(job_id):
            return False
        event = {"job_id": job_id, **{k: view[k] for k in EVENT_FIELDS if k != "job_id"}}
        if self._events is not None:
            try:
                self._events.publish_event(event)
            except Exception:  # the job is complete either way; the event is best effort after the claim
                log.exception("job-events publish failed", extra={"job_id": job_id})
        log.info("job complete", extra=event)
        if job.spec.callback_url and self._callbacks is not None:
            self._jobs.record_callback(job_id, self._deliver(job.spec.callback_url, {**view, "code": 200}))
        return True

    def _deliver(self, url: str, status: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(status, separators=(",", ":"), sort_keys=True).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers[SIGNATURE_HEADER] = signature(body, self._key)
        error = ""
        for attempt in range(1, self._attempts + 1):
            try:
                answer = self._callbacks.post(url, body, headers, self._timeout)  # type: ignore[union-attr]
            except TransientError as exc:
                error = str(exc)
            else:
                if 200 <= answer < 300:
                    return {"status": "delivered", "attempts": attempt, "http_status": answer}
                error = f"HTTP {answer}"
                if 400 <= answer < 500 and answer not in (408, 429):
                    break  # the receiver refuses it: retrying the same body cannot help
            if attempt < self._attempts:
                self._sleep(self._backoff * 2 ** (attempt - 1))
        log.warning("completion callback given up", extra={"url": url, "error": error})
        return {"status": "failed", "attempts": attempt, "error": error}
