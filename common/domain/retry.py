"""How often and how patiently something that may pass is tried again: one rule for the in-process queue and
the completion callbacks (Pub/Sub's own redelivery is configured by deploy.sh)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int
    backoff: float  # seconds before the second attempt; doubled before each later one

    def delay_after(self, attempt: int) -> float | None:
        """Seconds to wait after attempt number `attempt` (from 1) failed; None when it was the last."""
        return None if attempt >= self.attempts else self.backoff * 2 ** (attempt - 1)
