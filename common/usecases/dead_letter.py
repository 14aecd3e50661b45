"""Dead letters: a message Pub/Sub gave up on (its delivery cap reached) is recorded, so every job finishes. An
image's: a failure "gave up after N deliveries", once (a result already recorded wins), and the job announced if
that was its last image. A storage notification's: the object joins each open watch job holding it that had not
registered it, as that same failure."""
from __future__ import annotations

from collections.abc import Callable

from common.domain.jobs import is_plain_object_name
from common.domain.messages import ClassifyMessage
from common.domain.results import ImageResult
from common.logs import get_logger
from common.ports import Arrivals, JobReader, ResultRecorder

log = get_logger("dead_letter")


def gave_up(deliveries: int | None, what: str = "deliveries") -> str:
    return f"gave up after {deliveries} {what}" if deliveries else f"gave up after the {what} allowed"


class RecordDeadLetter:
    def __init__(self, jobs: JobReader, results: ResultRecorder, arrivals: Arrivals,
                 announce: Callable[[str], bool] | None = None) -> None:
        self._jobs = jobs
        self._results = results
        self._arrivals = arrivals
        self._announce = announce

    def image(self, message: ClassifyMessage, deliveries: int | None) -> ImageResult | None:
        """The failure recorded, or None (already counted, or no job would have sent the message)."""
        job = self._jobs.get_job(message.job_id)
        if job is None or not message.name.startswith(job.spec.source_prefix) or \
                not is_plain_object_name(message.name):
            log.warning("dead letter refused: no job sent it", extra={"job_id": message.job_id,
                                                                       "object": message.name})
            return None
        result = ImageResult.failure(message.name, gave_up(deliveries))
        recorded = self._results.record_result(job.id, result)
        if self._announce is not None:
            self._announce(job.id)
        log.error("image given up" if recorded else "dead letter of an image already counted",
                  extra={"job_id": job.id, "object": message.name, "deliveries": deliveries})
        return result if recorded else None

    def object_event(self, bucket: str, name: str, deliveries: int | None) -> list[str]:
        """The watch jobs the object was recorded as failed in."""
        failed = []
        for job in self._arrivals.watch_jobs(bucket):
            if name.startswith(job.spec.source_prefix) and self._arrivals.register_arrival(job.id, name):
                reason = gave_up(deliveries, "deliveries of its storage notification")
                if self._results.record_result(job.id, ImageResult.failure(name, reason)):
                    failed.append(job.id)
                    if self._announce is not None:
                        self._announce(job.id)
        log.error("storage notification given up", extra={"object": name, "jobs": failed,
                                                          "deliveries": deliveries})
        return failed
