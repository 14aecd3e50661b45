"""What a runner decides about the jobs it keeps (the embedded CLI and server): which job a rerun resumes, which
jobs a restarted server picks up again, whether there is room for another job, and the list of a folder's jobs."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from common.domain.errors import NotFound, Overloaded
from common.domain.jobs import JobDefaults
from common.domain.requests import parse_job_request
from common.domain.status import JobView, status_view
from common.ports import JobListing, JobReader, ObjectReader, UndoRecords
from common.usecases.create_job import CreateJob, ResumeJob
from common.usecases.report_job import KeptCopies


class KeptJobs(JobReader, JobListing, UndoRecords, Protocol):
    """A runner's job store: read, listed, and which of its jobs were undone."""


def views_of(jobs: JobReader, job_ids: Iterable[str]) -> Iterator[JobView]:
    """The status view of each job that exists, in the order given."""
    for job_id in job_ids:
        job = jobs.get_job(job_id)
        if job is not None:
            yield status_view(job, jobs.counters(job_id))


class PickJob:
    """The job a command names, or else the latest one (for undo: the latest one not undone yet)."""

    def __init__(self, jobs: KeptJobs) -> None:
        self._jobs = jobs

    def __call__(self, job_id: str | None = None, not_undone: bool = False) -> str:
        if job_id:
            return job_id
        if not_undone:
            undone = self._jobs.undone_jobs()
            left = [i for i in self._jobs.job_ids() if i not in undone]
            if not left:
                raise NotFound("every job here is undone already", field="id")
            return left[-1]
        chosen = self._jobs.latest_job_id()
        if chosen is None:
            raise NotFound("no jobs here yet", field="id")
        return chosen


class FindResumableJob:
    """The job a rerun of the same command continues: the latest one, asking for the same thing, that did not
    complete or has failures that may pass now."""

    def __init__(self, jobs: KeptJobs, defaults: JobDefaults) -> None:
        self._jobs = jobs
        self._defaults = defaults

    def __call__(self, body: object) -> str | None:
        job_id = self._jobs.latest_job_id()
        job = None if job_id is None else self._jobs.get_job(job_id)
        if job is None or job.spec != parse_job_request(body, self._defaults).spec:
            return None
        if not status_view(job, self._jobs.counters(job.id)).complete:
            return job.id
        retryable = any(not result.ok and result.retryable for result in self._jobs.results(job.id))
        return job.id if retryable else None


class ResumeUnfinished:
    """Jobs an earlier server left running (stopped or killed): their images without a result published again."""

    def __init__(self, jobs: KeptJobs, resume: ResumeJob) -> None:
        self._jobs = jobs
        self._resume = resume

    def __call__(self) -> list[str]:
        resumed = []
        for view in views_of(self._jobs, self._jobs.job_ids()):
            if not view.complete and view.error is None:
                self._resume(view.id)
                resumed.append(view.id)
        return resumed


class AdmitJob:
    """Bounded work in flight: past `max_queued` waiting images a new job — or a retry, whose re-published images
    wait in the same queue — is told when to come back (429) instead of queueing without limit."""

    def __init__(self, create: CreateJob, backlog: Callable[[], int], max_queued: int,
                 retry: Callable[[str], JobView]) -> None:
        self._create = create
        self._backlog = backlog
        self._max_queued = max_queued
        self._retry = retry

    def __call__(self, body: object) -> JobView:
        self._admit()
        return self._create(body)

    def retry(self, job_id: str) -> JobView:
        """POST …/retry, admitted as a new job is (`imgclassify serve` routes it here)."""
        self._admit()
        return self._retry(job_id)

    def _admit(self) -> None:
        queued = self._backlog()
        if queued >= self._max_queued:
            raise Overloaded(f"{queued} images are waiting to be classified (limit {self._max_queued}); retry later",
                             retry_after=max(1, min(60, queued // 100)))


@dataclass(frozen=True)
class KeptJob:
    view: JobView
    copies_made: int | None  # the copies the job owns (written, not released); None: not asked
    copies_present: int | None  # of those, still where the job put them; None: not looked for
    undone_at: str | None = None


class ListJobs:
    def __init__(self, jobs: KeptJobs, objects: ObjectReader) -> None:
        self._jobs = jobs
        self._objects = objects

    def __call__(self, with_copies: bool = True, look: bool = False) -> list[KeptJob]:
        """Every job from its kept counters, with how many copies it owns unless `with_copies` is False (what a
        page polling for progress asks); `look`: each copy looked for on disk too (each result read: a cost that
        grows with the job, asked for by `jobs --check`)."""
        kept = []
        undone = self._jobs.undone_jobs()
        for view in views_of(self._jobs, self._jobs.job_ids()):
            if not with_copies:
                kept.append(KeptJob(view, None, None, undone.get(view.id)))
            elif look or not isinstance(self._jobs, KeptCopies):
                written = [name for result in self._jobs.results(view.id) for name in result.written]
                present = sum(self._objects.exists(view.job.spec.bucket, name) for name in written) if look else None
                kept.append(KeptJob(view, len(written), present, undone.get(view.id)))
            else:
                kept.append(KeptJob(view, self._jobs.copies_written(view.id), None, undone.get(view.id)))
        return kept


class RecentJobListing(JobReader, Protocol):
    def recent_job_ids(self, limit: int) -> list[str]: ...


class RecentJobs:
    """The newest jobs' views (what `emulate` shows as they progress)."""

    def __init__(self, jobs: RecentJobListing) -> None:
        self._jobs = jobs

    def __call__(self, limit: int = 5) -> list[JobView]:
        return list(views_of(self._jobs, self._jobs.recent_job_ids(limit)))
