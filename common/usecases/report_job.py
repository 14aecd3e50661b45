"""A job's results for people: its view and every image's result, and previews of its own photos. A query: it
reads the job, its results and (for previews) the photos; it writes nothing. The HTTP layer and the CLI render
them (common/pages)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from common.domain.errors import NotFound, ObjectMissing, PermanentImageError, TransientError
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


class ReportJob:
    def __init__(self, jobs: JobReader, objects: ObjectReader, thumbnail: Callable[..., bytes | None],
                 status: JobStatus | None = None) -> None:
        self._jobs = jobs
        self._status = status or JobStatus(jobs)
        self._objects = objects
        self._thumbnail = thumbnail

    def __call__(self, job_id: str) -> JobReport:
        view = self._status(job_id)
        return JobReport(view, list(self._jobs.results(view.id)))

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
