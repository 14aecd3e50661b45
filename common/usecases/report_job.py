"""A job's results for people: its view and every image's result, and previews of its own photos. A query: it
reads the job, its results and (for previews) the photos; it writes nothing. The HTTP layer and the CLI render
them (common/pages)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from common.domain.corrections import placed
from common.domain.errors import InvalidRequest, NotFound, ObjectMissing, PermanentImageError, TransientError
from common.domain.jobs import is_plain_object_name
from common.domain.results import ImageResult
from common.domain.status import JobView
from common.ports import JobReader, ObjectReader
from common.usecases.job_status import JobStatus
from common.usecases.lookup import existing_job


@dataclass(frozen=True)
class JobReport:
    view: JobView
    results: list[ImageResult]


@dataclass(frozen=True)
class Section:
    """One page of a section of a job's results ("class:<name>", "section:unmatched", "section:failed"), in name
    order, and how many the section holds (under the search, when there is one)."""

    key: str
    results: list[ImageResult]
    total: int


@runtime_checkable
class ResultPages(Protocol):
    """A job store that reads one page of a section through an index (SQLite), kept to `filtered`'s rule as
    corrections move copies; others are filtered here."""

    def results_page(self, job_id: str, section: str, offset: int, limit: int, query: str = "",
                     min_score: float | None = None, skip: int = 0) -> tuple[list[ImageResult], int]: ...


@runtime_checkable
class KeptCopies(Protocol):
    """A job store that keeps how many copies each job owns (SQLite): read that, not every result."""

    def copies_written(self, job_id: str) -> int: ...


def section_keys(view: JobView) -> list[str]:
    return [f"class:{name}" for name in view.job.spec.classes] + ["section:unmatched", "section:failed"]


def _member(result: ImageResult, section: str, classes: Sequence[str], copies: bool) -> tuple[bool, float | None]:
    """Whether a result is in a section, and its score there (what the page's score filter compares)."""
    if section.startswith("class:"):
        name = section[len("class:"):]
        return placed(result, name, copies), result.scores.get(name, 0.0)
    if section == "section:unmatched":
        return result.ok and not any(placed(result, name, copies) for name in classes), \
            max(result.scores.values(), default=None)
    return section == "section:failed" and not result.ok, None


def filtered(results: Iterable[ImageResult], section: str, query: str, min_score: float | None, skip: int,
             classes: Sequence[str], copies: bool) -> list[ImageResult]:
    """A section under a search, over every result: the rule ResultPages applies through its index (`copies`: a
    photo is where its copies are, JobView.by_copies)."""
    chosen = []
    for result in sorted(results, key=lambda r: r.name):
        member, score = _member(result, section, classes, copies)
        text = (result.name[skip:] + "\n" + ", ".join(label.name for label in result.labels[:3])).lower()
        if member and query.lower() in text and (min_score is None or (score is not None and score >= min_score)):
            chosen.append(result)
    return chosen


class ReportJob:
    def __init__(self, jobs: JobReader, objects: ObjectReader, thumbnail: Callable[..., bytes | None],
                 status: JobStatus) -> None:
        self._jobs = jobs
        self._status = status
        self._objects = objects
        self._thumbnail = thumbnail

    def __call__(self, job_id: str) -> JobReport:
        """The view and every result (a file, an export: what grows with the job)."""
        view = self._status(job_id)
        return JobReport(view, list(self._jobs.results(view.id)))

    def totals(self, job_id: str) -> tuple[JobView, int]:
        """The view and how many copies the job owns (what `run` ends with), from kept counters where kept."""
        view = self._status(job_id)
        if isinstance(self._jobs, KeptCopies):
            return view, self._jobs.copies_written(view.id)
        return view, sum(len(result.written) for result in self._jobs.results(view.id))

    def sections(self, job_id: str, per_section: Callable[[int], int]) -> tuple[JobView, list[Section]]:
        """The first page of each section, `per_section(sections)` photos long (a served page: the same size
        whatever the job's)."""
        view = self._status(job_id)
        keys = section_keys(view)
        return view, [self._page(view, key, 0, per_section(len(keys)), "", None) for key in keys]

    def page(self, job_id: str, section: str, offset: int, limit: int, query: str = "",
             min_score: float | None = None) -> tuple[JobView, Section]:
        """One page of one section under a search and a minimum score (what a page fetches as it is used)."""
        view = self._status(job_id)
        if section not in section_keys(view):
            raise InvalidRequest(f"no section {section!r} in this job: one of {', '.join(section_keys(view))}",
                           field="section")
        return view, self._page(view, section, offset, limit, query, min_score)

    def _page(self, view: JobView, section: str, offset: int, limit: int, query: str,
              min_score: float | None) -> Section:
        skip = len(view.job.spec.source_prefix)  # names are searched as the page shows them: under the prefix
        if isinstance(self._jobs, ResultPages):
            results, total = self._jobs.results_page(view.id, section, offset, limit, query, min_score, skip)
            return Section(section, results, total)
        chosen = filtered(self._jobs.results(view.id), section, query, min_score, skip, view.job.spec.classes,
                          view.by_copies)
        return Section(section, chosen[offset:offset + limit], len(chosen))

    def thumbnail(self, job_id: str, name: str, box: tuple[float, float, float, float] | None = None,
                  full: bool = False) -> bytes | None:
        """A preview of one of the job's photos (or, `full`, the photo itself re-encoded: never the stored bytes,
        whatever they hold): a name that is plain, under the job's prefix and one of its results (one keyed
        lookup; a page of 300 photos asks 300 times, so the counters are not read)."""
        job = existing_job(self._jobs, job_id)
        spec = job.spec
        if not is_plain_object_name(name) or not name.startswith(spec.source_prefix) or \
                self._jobs.result(job.id, name) is None:
            raise NotFound("name is not one of this job's photos", field="name")
        try:
            data = self._objects.read(spec.bucket, name)
            return self._thumbnail(data, box, full)
        except (ObjectMissing, PermanentImageError, TransientError):
            return None
