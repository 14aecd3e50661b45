"""Deliver one job's completion callback: an HTTP POST of its final status, signed, retried with backoff on what
may pass, then given up; the outcome is recorded on the job. It runs in the background (a bounded pool): no
classification and no request ever waits for a receiver."""
from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

from common.domain.errors import CallbackRefused, TransientError
from common.domain.retry import RetryPolicy
from common.logs import get_logger
from common.ports import CallbackSender, JobCallbacks

log = get_logger("deliver_callback")

SIGNATURE_HEADER = "X-Imgclassify-Signature"  # "sha256=<hex HMAC-SHA256 of the body with SERVICE_KEY>"


def signature(body: bytes, key: str) -> str:
    return "sha256=" + hmac.new(key.encode("utf-8"), body, hashlib.sha256).hexdigest()


class DeliverCallback:
    def __init__(self, jobs: JobCallbacks, sender: CallbackSender, service_key: str, *,
                 sleep: Callable[[float], None], attempts: int = 4, backoff: float = 1.0, timeout: float = 5.0) -> None:
        self._jobs = jobs
        self._sender = sender
        self._key = service_key
        self._retry = RetryPolicy(attempts, backoff)
        self._timeout = timeout  # per attempt, all of it: connecting, sending and the answer
        self._sleep = sleep

    def __call__(self, job_id: str, url: str, status: dict[str, Any]) -> dict[str, Any]:
        outcome = self._deliver(url, status)
        self._jobs.record_callback(job_id, outcome)
        if outcome["status"] != "delivered":
            log.warning("completion callback given up", extra={"job_id": job_id, "error": outcome["error"]})
        return outcome

    def _deliver(self, url: str, status: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(status, separators=(",", ":"), sort_keys=True).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers[SIGNATURE_HEADER] = signature(body, self._key)
        error = ""
        for attempt in range(1, self._retry.attempts + 1):
            try:
                answer = self._sender.post(url, body, headers, self._timeout)
            except CallbackRefused as exc:
                return {"status": "failed", "attempts": attempt, "error": str(exc)}
            except TransientError:
                error = "unreachable"
            else:
                if 200 <= answer < 300:
                    return {"status": "delivered", "attempts": attempt, "http_status": answer}
                if 300 <= answer < 400:
                    return {"status": "failed", "attempts": attempt, "http_status": answer,
                            "error": f"HTTP {answer}: redirects are not followed"}
                error = f"HTTP {answer}"
                if 400 <= answer < 500 and answer not in (408, 429):
                    break  # the receiver refuses it: retrying the same body cannot help
            delay = self._retry.delay_after(attempt)
            if delay is not None:
                self._sleep(delay)
        return {"status": "failed", "attempts": attempt, "error": error}
