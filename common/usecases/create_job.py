"""Create a job: validate the request, record the job, list the images under its prefix, publish one message each.

Safe to retry. With a `request_id` the job id is derived from it, so a retried request finds the job it started:
a job that finished listing is returned as it is, one whose fan-out was interrupted is listed and published again
(classify_image counts each image once, so messages published twice change nothing). Without a request_id an
interrupted fan-out marks its job failed with the reason, so no job stays in `listing` forever.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import replace

from common.domain.errors import Conflict, FanOutInterrupted, InvalidRequest, Overloaded, TransientError
from common.domain.jobs import (DELIVERY_DEADLINE_SECONDS, MAX_EXAMPLE_READS, MAX_EXAMPLES, MAX_EXAMPLES_LISTED,
                                MIN_EXAMPLES, JobDefaults, JobRecord, JobSpec, is_photo_name, new_job_id,
                                next_republish, republish_window)
from common.domain.requests import old_rule_for_unknown_words, parse_job_request
from common.domain.status import JobView, status_view
from common.domain.messages import ClassifyMessage, new_message_key
from common.domain.options import MatchMode
from common.domain.taxonomy import describe_resolution, is_word
from common.logs import get_logger
from common.ports import Corrections, JobRecorder, Listed, ObjectLister, Publisher, RetryableFailures
from common.usecases.lookup import existing_job

log = get_logger("create_job")


def job_images(objects: ObjectLister, spec: JobSpec) -> Iterator[Listed]:
    """The objects a job covers: everything under its prefix but "folder" placeholder objects."""
    return (o for o in objects.list_objects(spec.bucket, spec.source_prefix) if not o.name.endswith("/"))


def example_photos(objects: ObjectLister, bucket: str, prefix: str) -> list[Listed]:
    """A class's example photos to read: the first MAX_EXAMPLE_READS objects named like photos among the first
    MAX_EXAMPLES_LISTED under its prefix; other files are skipped unread, so a folder of documents with a few
    photos still teaches by those photos. (The first MAX_EXAMPLES of them that decode are used.)"""
    listed = itertools.islice(objects.list_objects(bucket, prefix), MAX_EXAMPLES_LISTED)
    return list(itertools.islice((o for o in listed if is_photo_name(o.name)), MAX_EXAMPLE_READS))


class CreateJob:
    def __init__(self, objects: ObjectLister, jobs: JobRecorder, publisher: Publisher, defaults: JobDefaults, *,
                 clock: Callable[[], str], announce: Callable[[str], bool], detector: bool, corrections: Corrections,
                 resume: Callable[[str], tuple[int, int]]) -> None:
        self._objects = objects
        self._jobs = jobs
        self._publisher = publisher
        self._defaults = defaults
        self._clock = clock
        self._announce = announce  # an empty prefix completes at once: announced here
        self._detector = detector  # whether the service has the object detector (what a class means depends)
        self._corrections = corrections  # a word WordNet lacks is a class once people showed it on 2 photos
        self._resume = resume  # re-publishes a job's images without a result (a replayed request of a stalled job)

    def __call__(self, body: object) -> JobView:
        request = parse_job_request(body, self._defaults)
        spec = self._taught_by_corrections(request.spec)
        spec, old_rule = old_rule_for_unknown_words(body, spec)  # an old client's unknown word: the old rule
        # A class that means nothing is a 400 first.
        meaning = describe_resolution(spec.classes, spec.match, self._detector, spec.taught)
        if old_rule:
            meaning["warnings"] = [*meaning.get("warnings", []), *old_rule]
            log.warning("old client's unknown class: sorted by the old rule", extra={"warning": old_rule[0]})
        if spec.examples:
            meaning["example_photos"] = self._count_examples(spec)
        job = JobRecord(id=new_job_id(request.request_id), spec=spec, number_of_files=None,
                        created_at=self._clock(), request_id=request.request_id, message_key=new_message_key())
        if not self._jobs.create_job(job):
            existing = self._jobs.get_job(job.id)
            if existing is None:  # created and gone again: cannot happen with the stores we have
                raise TransientError(f"job {job.id} vanished while being created")
            if existing.spec != spec:
                raise Conflict(f"request_id {request.request_id!r} was already used for a different job "
                               f"({existing.id})", field="request_id", id=existing.id)
            job = existing
            if job.number_of_files is not None and job.error is None:
                log.info("job request replayed", extra={"job_id": job.id, "request_id": job.request_id})
                view = status_view(job, self._jobs.counters(job.id))
                # A stuck job's retry re-drives it, once per delivery deadline however often it is replayed.
                if view.stalled:
                    wait = republish_wait(self._jobs, job.id, self._clock())
                    published = self._resume(job.id)[1] if wait is None else 0
                    view = status_view(job, self._jobs.counters(job.id)).with_extra(republished=published)
                return view.with_extra(**meaning)
            log.info("resuming an interrupted fan-out", extra={"job_id": job.id, "request_id": job.request_id})
        listed = self._fan_out(job)
        self._announce(job.id)
        job = replace(job, number_of_files=listed, error=None)
        return status_view(job, self._jobs.counters(job.id)).with_extra(**meaning)

    def _taught_by_corrections(self, spec: JobSpec) -> JobSpec:
        """A class no WordNet noun names, without example photos, is taught by its corrections in this bucket
        when they show it on MIN_EXAMPLES photos (recorded as examples without a prefix)."""
        if spec.match != MatchMode.HIERARCHY:
            return spec
        taught = []
        for name in spec.classes:
            if name in spec.taught or is_word(name):
                continue
            shown = sum(self._corrections.corrections(spec.bucket, name.casefold()).values())
            if shown >= MIN_EXAMPLES:
                taught.append((name, ""))
        return replace(spec, examples=spec.examples + tuple(taught)) if taught else spec

    def _count_examples(self, spec: JobSpec) -> dict[str, int]:
        """How many photos (files named like one) each class's example prefix holds, up to the MAX_EXAMPLES used;
        too few is a 400. Whether they decode is found when they are read: one that does not is skipped."""
        counts = {}
        for name, prefix in spec.examples:
            if not prefix:  # taught by corrections
                continue
            counts[name] = min(MAX_EXAMPLES, len(example_photos(self._objects, spec.bucket, prefix)))
            if counts[name] < MIN_EXAMPLES:
                raise InvalidRequest(f"examples.{name}: {prefix!r} holds {counts[name]} photos (files named .jpg, "
                                     f".png, .heic…); at least {MIN_EXAMPLES} example photos are needed",
                                     field="examples")
        return counts

    def _fan_out(self, job: JobRecord) -> int:
        """List and publish at once (fan-out runs at the speed of the slower of the two, not of their sum); the
        job's total is set when both are done."""
        listed = 0

        def messages() -> Iterator[ClassifyMessage]:
            nonlocal listed
            for image in job_images(self._objects, job.spec):
                listed += 1
                # A watch job counts each object once, whether listed here or announced by a notification.
                if job.spec.watch and not self._jobs.register_arrival(job.id, image.name):
                    continue
                yield ClassifyMessage.for_job(job, image.name, image.content)

        try:
            published = self._publisher.publish_all(messages())
            self._jobs.set_total(job.id, listed)
        except Exception as exc:
            self._record_interruption(job, listed, exc)
            raise
        log.info("job created", extra={"job_id": job.id, "number_of_files": listed, "published": published,
                                       "classes": list(job.spec.classes)})
        return listed

    def _record_interruption(self, job: JobRecord, listed: int, exc: Exception) -> None:
        resumable = job.request_id is not None
        advice = ("retry the same request (same request_id) to resume it" if resumable else
                  "create the job again; send a request_id so that a retry resumes instead")
        reason = f"fan-out interrupted after {listed} images were listed ({exc}); {advice}"
        try:
            self._jobs.mark_failed(job.id, reason)
        except Exception:  # the store is down too: status reports a stale listing as failed after a deadline
            log.exception("could not record the interrupted fan-out", extra={"job_id": job.id})
        log.error("fan-out interrupted", extra={"job_id": job.id, "listed": listed, "error": str(exc)})
        if isinstance(exc, TransientError):
            raise FanOutInterrupted(reason, job.id, resumable) from exc


class ResumeJob:
    """Re-publish the images of a job that have no result yet (after an interrupted embedded run), and those whose
    failure may pass now (the disk was full). The job's total becomes what it will process: the images already
    done plus those published now."""

    def __init__(self, objects: ObjectLister, jobs: JobRecorder, publisher: Publisher,
                 retries: RetryableFailures | None) -> None:
        """retries None: the store keeps no failures that may pass later (the cloud's: Pub/Sub redelivers)."""
        self._objects = objects
        self._jobs = jobs
        self._publisher = publisher
        self._retries = retries

    def __call__(self, job_id: str) -> tuple[int, int]:
        """(already done, published now)."""
        job = existing_job(self._jobs, job_id)
        if self._retries is not None:
            self._retries.forget_retryable_failures(job_id)
        done = {result.name for result in self._jobs.results(job_id)}
        todo = [image for image in job_images(self._objects, job.spec) if image.name not in done]
        published = self._publisher.publish_all(ClassifyMessage.for_job(job, image.name, image.content)
                                                for image in todo)
        self._jobs.set_total(job.id, len(done) + len(todo))
        log.info("job resumed", extra={"job_id": job.id, "already_done": len(done), "published": published})
        return len(done), published


def republish_wait(jobs: JobRecorder, job_id: str, now: str) -> tuple[str, int] | None:
    """None when the job's images without a result may be re-published now (and that it happens is recorded, so
    concurrent callers get one re-publish); else when they may be next: (ISO time, seconds from now)."""
    if jobs.claim_republish(job_id, now, republish_window(now)):
        return None
    job = jobs.get_job(job_id)
    return next_republish(job.republished_at if job and job.republished_at else now, now)


class RetryJob:
    """POST /classification-job/<id>/retry: re-publish exactly the images of a job that have no result (messages
    lost to an outage or to instances that died past their retries). classify_image counts each image once, so
    a retry of a job that was only slow changes nothing but the work done — and an image is re-published at most
    once per delivery deadline: a retry within it is a 429 saying when, re-publishing nothing."""

    def __init__(self, jobs: JobRecorder, resume: ResumeJob, clock: Callable[[], str]) -> None:
        self._jobs = jobs
        self._resume = resume
        self._clock = clock

    def __call__(self, job_id: str) -> JobView:
        job = existing_job(self._jobs, job_id)
        if job.number_of_files is None:
            raise Conflict(f"job {job.id} is still listing its images: retry the create request with the same "
                           "request_id to resume it", field="id")
        wait = republish_wait(self._jobs, job.id, self._clock())
        if wait is not None:
            raise Overloaded(f"job {job.id}'s images without a result were re-published less than "
                             f"{DELIVERY_DEADLINE_SECONDS} s ago and may still be delivered: retry after {wait[0]}",
                             retry_after=wait[1], field="id", retry_at=wait[0])
        already, published = self._resume(job.id)
        log.info("job retried", extra={"job_id": job.id, "already_done": already, "republished": published})
        fresh = existing_job(self._jobs, job.id)
        return status_view(fresh, self._jobs.counters(job.id)).with_extra(republished=published)
