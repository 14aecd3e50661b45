"""Dead letters: a message Pub/Sub gave up on (its delivery cap reached) is recorded, so every job finishes. An
image's: a failure "gave up after N deliveries", once (a result already recorded wins), and the job announced if
that was its last image. A storage notification's: the object joins each open watch job holding it that had not
registered it, as that same failure.

Only what the job published is counted: the dead-letter topic is an input like any other, and a message naming an
unknown job, a name outside the job's prefix, an object that does not exist, or a job whose images are all counted
already is logged and acked, never counted. A job's images are known without reading its results: they are the
objects under its prefix (one existence check each), and there are never more than its total (one aggregation).
"""
from __future__ import annotations

from collections.abc import Callable

from common.domain.jobs import JobRecord, is_plain_object_name
from common.domain.messages import ClassifyMessage
from common.domain.results import ImageResult
from common.logs import get_logger
from common.ports import Arrivals, CompletionClaims, ObjectReader, ResultRecorder

log = get_logger("dead_letter")


def gave_up(deliveries: int | None, what: str = "deliveries") -> str:
    return f"gave up after {deliveries} {what}" if deliveries else f"gave up after the {what} allowed"


class RecordDeadLetter:
    def __init__(self, jobs: CompletionClaims, results: ResultRecorder, arrivals: Arrivals, objects: ObjectReader,
                 announce: Callable[[str], bool]) -> None:
        self._jobs = jobs
        self._results = results
        self._arrivals = arrivals
        self._announce = announce
        self._objects = objects

    def image(self, message: ClassifyMessage, deliveries: int | None) -> ImageResult | None:
        """The failure recorded, or None (already counted, or no job would have sent the message)."""
        job = self._jobs.get_job(message.job_id)
        refused = self._not_published(job, message)
        if job is None or refused:
            log.warning(f"dead letter refused: {refused}", extra={"job_id": message.job_id, "object": message.name})
            return None
        result = ImageResult.failure(message.name, gave_up(deliveries))
        recorded = self._results.record_result(job.id, result)
        self._announce(job.id)  # that may have been the job's last image
        log.error("image given up" if recorded else "dead letter of an image already counted",
                  extra={"job_id": job.id, "object": message.name, "deliveries": deliveries})
        return result if recorded else None

    def _not_published(self, job: JobRecord | None, message: ClassifyMessage) -> str | None:
        """Why no delivery of this job could have been this message, or None when one could have."""
        name = message.name
        if job is None:
            return "no such job"
        if not message.signed_by(job):
            return "not signed with the job's key"
        if not is_plain_object_name(name) or not name.startswith(job.spec.source_prefix):
            return "the name is not under the job's prefix"
        if not self._objects.exists(job.spec.bucket, name):
            return "no such object"
        if job.number_of_files is not None and self._counted(job) >= self._total(job):
            return "every image of the job is counted already"
        return None

    def _counted(self, job: JobRecord) -> int:
        return self._jobs.done_count(job.id)

    def _total(self, job: JobRecord) -> int:
        """What the job may count: its listing, and for a watch job whatever arrived since (read only then)."""
        total = job.number_of_files or 0
        return max(total, self._jobs.counters(job.id).arrived) if job.spec.watch else total

    def object_event(self, bucket: str, name: str, deliveries: int | None) -> list[str]:
        """The watch jobs the object was recorded as failed in (none when there is no such object)."""
        if not self._objects.exists(bucket, name):
            log.warning("dead letter refused: no such object", extra={"object": name})
            return []
        failed = []
        for job in self._arrivals.watch_jobs(bucket):
            if name.startswith(job.spec.source_prefix) and self._arrivals.register_arrival(job.id, name):
                reason = gave_up(deliveries, "deliveries of its storage notification")
                if self._results.record_result(job.id, ImageResult.failure(name, reason)):
                    failed.append(job.id)
                    self._announce(job.id)
        log.error("storage notification given up", extra={"object": name, "jobs": failed,
                                                          "deliveries": deliveries})
        return failed
