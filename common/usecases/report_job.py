"""A job's results for people: the HTML page, or CSV / JSON Lines of the per-image results. A query: it reads the
job, its results and (for previews) the photos; it writes nothing."""
from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

from common.domain.errors import InvalidRequest, NotFound, ObjectMissing, PermanentImageError, TransientError
from common.domain.jobs import is_plain_object_name
from common.ports import JobWriter, ObjectStore
from common.report import export_csv, export_jsonl, render_report
from common.usecases.job_status import JobStatus
from common.usecases.lookup import existing_job

FORMATS = {"html": "text/html; charset=utf-8", "csv": "text/csv; charset=utf-8",
           "jsonl": "application/x-ndjson; charset=utf-8"}
REFRESH_SECONDS = 3  # a served page of a running job reloads itself
# A file carries its previews inline (~5 KB each): past this many photos the rest show their names only, so a
# 10,000-photo report stays a file a browser opens quickly; the served page fetches every preview, lazily.
MAX_INLINE_PREVIEWS = 3000


class ReportJob:
    def __init__(self, jobs: JobWriter, objects: ObjectStore, thumbnail: Callable[[bytes], bytes | None]) -> None:
        self._jobs = jobs
        self._status = JobStatus(jobs)
        self._objects = objects
        self._thumbnail = thumbnail

    def __call__(self, job_id: str, fmt: str = "html", thumbnail_url: Callable[[str], str] | None = None,
                 live: bool = False) -> tuple[str, str]:
        """(content type, body). Thumbnails are inline (a file) unless thumbnail_url says where to fetch them."""
        if fmt not in FORMATS:
            raise InvalidRequest(f"format must be one of {', '.join(FORMATS)}", field="format")
        view = self._status(job_id)
        results = list(self._jobs.results(job_id))
        if fmt == "csv":
            return FORMATS[fmt], export_csv(view, results)
        if fmt == "jsonl":
            return FORMATS[fmt], export_jsonl(view, results)
        inlined = 0

        def inline(name: str) -> str | None:
            nonlocal inlined
            inlined += 1
            return self._inline(view, name) if inlined <= MAX_INLINE_PREVIEWS else None

        source = thumbnail_url or inline
        refresh = REFRESH_SECONDS if live and view["state"] in ("listing", "running", "watching") else None
        return FORMATS[fmt], render_report(view, results, source, refresh)

    def thumbnail(self, job_id: str, name: str) -> bytes | None:
        """A preview of one of the job's photos (served pages fetch them one by one, lazily). Only the job's record
        is read: a page of 300 photos asks 300 times, and the counters are not needed for a preview."""
        spec = existing_job(self._jobs, job_id).spec
        if not is_plain_object_name(name) or not name.startswith(spec.source_prefix) or \
                self._jobs.result(job_id, name) is None:
            raise NotFound("name is not one of this job's photos", field="name")
        return self._preview(spec.bucket, name)

    def _preview(self, bucket: str, name: str) -> bytes | None:
        try:
            return self._thumbnail(self._objects.read(bucket, name))
        except (ObjectMissing, PermanentImageError, TransientError):
            return None

    def _inline(self, view: dict[str, Any], name: str) -> str | None:
        preview = self._preview(view["bucket"], name)
        return None if preview is None else "data:image/jpeg;base64," + base64.b64encode(preview).decode("ascii")


