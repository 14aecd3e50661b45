"""The three use cases — create a job, classify one image, report a job — written once against the ports.

Cloud functions and the embedded runner both call these; only the adapters passed in differ.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from common.config import Settings
from common.errors import NotFound, ObjectMissing, PermanentImageError
from common.faults import crash_point
from common.imaging import decode_image
from common.jobs import (Counters, ImageResult, JobRecord, JobSpec, check_job_id, new_job_id, parse_job_request,
                         status_view, target_name)
from common.logs import get_logger
from common.matching import describe_resolution, match_classes
from common.messages import ClassifyMessage
from common.model import Classifier
from common.ports import JobStore, ObjectStore, Publisher

log = get_logger("service")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class ClassificationService:
    def __init__(self, settings: Settings, objects: ObjectStore, jobs: JobStore, publisher: Publisher | None,
                 classifier: Callable[[], Classifier] | None = None, clock: Callable[[], str] = _now) -> None:
        self.settings = settings
        self.objects = objects
        self.jobs = jobs
        self.publisher = publisher
        self._classifier = classifier
        self._clock = clock

    # --- create_job -------------------------------------------------------------------------------------------
    def status_url(self, job_id: str) -> str:
        return f"{self.settings.status_url_base.rstrip('/')}/classification-job/{job_id}"

    def create_job(self, body: object) -> dict[str, Any]:
        spec = parse_job_request(body, default_bucket=self.settings.bucket,
                                 default_top_k=self.settings.default_top_k,
                                 default_min_score=self.settings.default_min_score,
                                 max_classes=self.settings.max_classes)
        meaning = describe_resolution(spec)  # a class that means nothing is a 400 before anything is written
        # The job exists before its first message does; its total is set once listing ends, so listing and
        # publishing overlap (fan-out runs at the speed of the slower of the two, not of their sum).
        job = JobRecord(id=new_job_id(), spec=spec, number_of_files=None, created_at=self._clock())
        self.jobs.create_job(job)
        listed = 0

        def images() -> Iterator[ClassifyMessage]:
            nonlocal listed
            for name in self._image_names(spec):
                listed += 1
                yield ClassifyMessage(job.id, name, spec)

        assert self.publisher is not None, "create_job needs a publisher"
        published = self.publisher.publish_all(images())
        self.jobs.set_total(job.id, listed)
        job = replace(job, number_of_files=listed)
        log.info("job created", extra={"job_id": job.id, "number_of_files": job.number_of_files,
                                       "published": published, "classes": list(spec.classes)})
        view = status_view(job, Counters(), self.status_url(job.id))
        view.update(meaning)
        view["code"] = 201
        return view

    def _image_names(self, spec: JobSpec) -> Iterator[str]:
        """The objects a job covers: everything under its prefix but "folder" placeholder objects."""
        return (n for n in self.objects.list_names(spec.bucket, spec.source_prefix) if not n.endswith("/"))

    def resume_job(self, job_id: str) -> int:
        """Re-publish the images of a job that have no result yet (after an interrupted local run)."""
        job = self.jobs.get_job(job_id)
        if job is None:
            raise NotFound(f"Job {job_id} not found")
        done = {result.name for result in self.jobs.results(job_id)}
        todo = [n for n in self._image_names(job.spec) if n not in done]
        assert self.publisher is not None, "resume_job needs a publisher"
        published = self.publisher.publish_all(ClassifyMessage(job.id, name, job.spec) for name in todo)
        if job.number_of_files is None:  # the interrupted run never finished listing
            self.jobs.set_total(job.id, len(done) + len(todo))
        log.info("job resumed", extra={"job_id": job.id, "already_done": len(done), "published": published})
        return published

    # --- classify_image ---------------------------------------------------------------------------------------
    def classify(self, message: ClassifyMessage) -> ImageResult | None:
        """Classify one image, copy it into each matching class prefix, count it once. None if already counted."""
        context = {"job_id": message.job_id, "object": message.name}
        if self.jobs.has_result(message.job_id, message.name):
            log.info("duplicate delivery ignored", extra=context)
            return None
        result = self._classify_and_copy(message)
        crash_point("after_copy", message.name)
        if not self.jobs.record_result(message.job_id, result):
            log.info("duplicate delivery ignored after classification", extra=context)
            return None
        crash_point("after_count", message.name)
        if result.ok:
            log.info("image classified", extra={**context, "matched": list(result.matched),
                                                "top_label": result.labels[0].name if result.labels else None})
        else:
            log.warning("image failed", extra={**context, "reason": result.reason})
        return result

    def _classify_and_copy(self, message: ClassifyMessage) -> ImageResult:
        spec = message.spec
        try:
            data = self.objects.read(spec.bucket, message.name)
            pixels = decode_image(data)
        except ObjectMissing:
            return ImageResult(message.name, ok=False, reason="object no longer exists")
        except PermanentImageError as exc:
            return ImageResult(message.name, ok=False, reason=exc.reason)
        assert self._classifier is not None, "classify needs a classifier"
        log.debug("model call", extra={"job_id": message.job_id, "object": message.name})
        probabilities = self._classifier().predict(pixels[None])[0]
        outcome = match_classes(spec, probabilities)
        made = []
        for class_name in outcome.matched:
            target = target_name(class_name, message.name, spec.source_prefix)
            try:
                if self.objects.copy(spec.bucket, message.name, target):
                    made.append(target)
            except ObjectMissing:
                return ImageResult(message.name, ok=False, reason="object deleted while being classified")
        log.info("copies made", extra={"job_id": message.job_id, "object": message.name, "copies": len(made),
                                       "targets": made})
        return ImageResult(message.name, ok=True, matched=outcome.matched, labels=outcome.labels,
                           scores=outcome.scores)

    # --- job_status -------------------------------------------------------------------------------------------
    def status(self, job_id: str) -> dict[str, Any]:
        check_job_id(job_id)
        job = self.jobs.get_job(job_id)
        if job is None:
            raise NotFound(f"Job {job_id} not found")
        view = status_view(job, self.jobs.counters(job_id), self.status_url(job_id))
        view.update(describe_resolution(job.spec))
        return view
