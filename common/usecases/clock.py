"""Timestamps the use cases record (a parameter of each, so tests can pin time)."""
from __future__ import annotations

from datetime import UTC, datetime


def utc_now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
