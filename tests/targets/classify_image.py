"""Test-only function target: the real classify_image use case behind the real Pub/Sub entry policy, with its
adapters wrapped so the emulator tests can observe every delivery and kill the instance at chosen points.

  functions-framework --source tests/targets/classify_image.py --target classify_image --signature-type cloudevent

OBSERVE_DIR: each delivery's outcome, and each copy actually written, as one JSON line in OBSERVE_DIR/events.jsonl.
IMGCLASSIFY_CRASH, IMGCLASSIFY_CRASH_DIR: crash points (tests/faults.py): "after_copy" kills the process after the
image's copies are made and before its result is recorded, "after_count" after the result is recorded and before
the delivery is acked.
"""
from __future__ import annotations

import dataclasses

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: `tests` is not installed

import functions_framework  # noqa: E402
from cloudevents.http import CloudEvent  # noqa: E402

from common import bootstrap  # noqa: E402
from common.domain.errors import BadMessage  # noqa: E402
from common.domain.messages import from_cloud_event  # noqa: E402
from common.domain.results import ImageResult  # noqa: E402
from common.ports import Copied  # noqa: E402
from common.pubsub import handle_event  # noqa: E402
from common.usecases.classify_image import ClassifyImage  # noqa: E402
from tests.faults import crash_point  # noqa: E402


def observe(**event: Any) -> None:
    folder = os.environ.get("OBSERVE_DIR")
    if folder:
        line = json.dumps(event) + "\n"
        # One write of one short line with O_APPEND: lines from concurrent workers never interleave.
        fd = os.open(Path(folder) / "events.jsonl", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)


class ObservedObjects:
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def copy(self, bucket: str, source: str, target: str, content: str | None = None) -> Copied:
        copied = self._inner.copy(bucket, source, target, content)
        if copied.written:
            observe(kind="copy_written", source=source, target=copied.name)
        return copied

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class CrashingResults:
    """The job store, crashing (when told to) around recording a result; everything else passed through."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def record_job_error(self, job_id: str, message: str) -> None:
        self._inner.record_job_error(job_id, message)

    def record_result(self, job_id: str, result: ImageResult) -> bool:
        crash_point("after_copy", result.name)
        recorded = self._inner.record_result(job_id, result)
        crash_point("after_count", result.name)
        return recorded


@functools.lru_cache(maxsize=1)
def handler() -> ClassifyImage:
    settings = bootstrap.settings()
    ports = bootstrap.cloud_ports(settings)
    return bootstrap.Application(settings, dataclasses.replace(ports, objects=ObservedObjects(ports.objects),
                                                               jobs=CrashingResults(ports.jobs))).classify_image


@functions_framework.cloud_event
def classify_image(event: CloudEvent) -> None:
    result = handle_event(event["type"], event["id"], event.data, handler)
    try:
        message = from_cloud_event(event["type"], event.data)
    except BadMessage:
        observe(kind="delivery", outcome="malformed")
        return
    outcome = "duplicate" if result is None else "classified" if result.ok else "failed"
    observe(kind="delivery", job_id=message.job_id, name=message.name, outcome=outcome)
