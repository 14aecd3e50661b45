"""A job's status: its state and counts, derived once from the job record and its counters. Every caller — the
HTTP answer, the terminal, the results page, the completion event, undo's check — reads this one view."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

from common.domain.jobs import JobRecord
from common.domain.results import Counters

# create_job lists and publishes within its function timeout (540 s); a job still listing long after that was
# abandoned by an instance that died, and says so instead of looking busy forever.
LISTING_DEADLINE_SECONDS = 900
# A running job none of whose images finished for this long has lost its messages (a Pub/Sub outage, instances
# that died past their retries): it says so, and POST …/retry (or the same request_id) re-publishes the rest.
STALL_SECONDS = 600


class JobState(StrEnum):
    LISTING = "listing"  # create_job is still listing (and publishing) the images
    RUNNING = "running"
    WATCHING = "watching"  # an open watch job: more images may arrive
    STALLED = "stalled"  # its images hit an error an operator must fix (status says which)
    COMPLETE = "complete"
    FAILED = "failed"  # it cannot finish (status says why)

    @property
    def in_progress(self) -> bool:
        """Still changing: copies may yet be made, so it cannot be undone or treated as finished."""
        return self in (JobState.LISTING, JobState.RUNNING, JobState.WATCHING)


def _age_seconds(created_at: str, now: datetime) -> float:
    try:
        return (now - datetime.fromisoformat(created_at)).total_seconds()
    except ValueError:
        return 0.0


@dataclass(frozen=True, eq=False)
class JobView:
    """One typed value: facts through its properties, the JSON answer through `body` (or `to_dict()`)."""

    job: JobRecord
    counters: Counters
    now: datetime | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # what the class words mean (resolved, warnings)

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def done(self) -> int:
        """Images with a result: classified or failed."""
        return self.counters.processed + self.counters.failed

    @property
    def listing(self) -> bool:
        return self.job.number_of_files is None

    @property
    def number_of_files(self) -> int:
        if self.job.spec.watch:  # everything listed or announced so far, each object once
            return max(self.counters.arrived, self.done)
        return self.done if self.job.number_of_files is None else self.job.number_of_files

    @property
    def remaining(self) -> int:
        return max(0, self.number_of_files - self.done)

    @property
    def watching(self) -> bool:
        return self.job.spec.watch and not self.job.closed

    @property
    def error(self) -> str | None:
        if self.job.error or not self.listing:
            return self.job.error
        if _age_seconds(self.job.created_at, self.now or datetime.now(UTC)) > LISTING_DEADLINE_SECONDS:
            return (f"listing did not finish within {LISTING_DEADLINE_SECONDS} s (the instance stopped); "
                    "retry the request with the same request_id to resume it")
        return None

    @property
    def stalled(self) -> str | None:
        """Why a running job looks stuck, or None."""
        if self.listing or self.watching or self.job.error or self.done >= self.number_of_files:
            return None
        since = max(self.job.created_at, self.counters.last_result_at or "")
        idle = _age_seconds(since, self.now or datetime.now(UTC))
        if idle <= STALL_SECONDS:
            return None
        return (f"no image finished for {int(idle)} s ({self.done} of {self.number_of_files} done): POST "
                f"/classification-job/{self.job.id}/retry re-publishes the {self.remaining} without a result")

    @property
    def complete(self) -> bool:
        return not self.listing and not self.watching and self.done >= self.number_of_files and \
            self.job.error is None

    @property
    def state(self) -> JobState:
        if self.error:
            return JobState.FAILED
        if self.listing:
            return JobState.LISTING
        if self.complete:
            return JobState.COMPLETE
        if self.job.errors or self.stalled:
            return JobState.STALLED
        return JobState.WATCHING if self.watching else JobState.RUNNING

    @property
    def matches(self) -> dict[str, int]:
        """Photos matched per class of the job, in the job's order (a class none matched: 0)."""
        return {name: self.counters.matches.get(name, 0) for name in self.job.spec.classes}

    @property
    def by_copies(self) -> bool:
        """Whether its photos are shown where their copies are (corrections.placed: a correction moves them) rather
        than where they matched: not a dry run's (it made none), nor an undone job's (it owns none)."""
        return not self.job.spec.dry_run and not self.extra.get("undone_at")

    @property
    def percentage(self) -> int:
        if self.listing:
            return 0
        if self.complete:
            return 100
        return min(99, (100 * self.done) // self.number_of_files) if self.number_of_files else 0

    def with_extra(self, **fields: Any) -> JobView:
        return replace(self, extra={**self.extra, **fields})

    @cached_property
    def body(self) -> dict[str, Any]:
        """The job_status body: the old service's fields first, then the richer ones."""
        job, counters, spec = self.job, self.counters, self.job.spec
        view: dict[str, Any] = {
            "id": job.id, "classes": list(spec.classes), "complete": self.complete, "percentage": self.percentage,
            "number_of_files": self.number_of_files, "processed": counters.processed, "failed": counters.failed,
            "remaining": self.remaining, "matches": self.matches,
            "unmatched": counters.unmatched, "state": self.state.value, "created_at": job.created_at,
            "bucket": spec.bucket, "source_prefix": spec.source_prefix, "top_k": spec.top_k,
            "min_score": spec.min_score, "match": spec.match.value, "from_store": counters.from_store,
            "detector_min_score": spec.detector_min_score,
        }
        optional = {"dry_run": spec.dry_run or None, "watch": spec.watch or None,
                    "callback_url": spec.callback_url or None, "callback": job.callback,
                    "predictions_recomputed": counters.recomputed or None, "request_id": job.request_id,
                    "error": self.error, "errors": list(job.errors) or None,
                    "examples": dict(spec.examples) or None, "stalled": self.stalled,
                    # per class, the photos placed by what people said of them (`examples --list` shows those)
                    "corrections_followed": {c: n for c, n in counters.corrected.items() if n} or None}
        view.update({key: value for key, value in optional.items() if value is not None})
        view.update(self.extra)
        return view

    def to_dict(self) -> dict[str, Any]:
        return dict(self.body)


def status_view(job: JobRecord, counters: Counters, now: datetime | None = None) -> JobView:
    return JobView(job, counters, now)
