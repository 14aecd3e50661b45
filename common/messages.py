"""The fan-out message: one per image, self-contained so classify_image needs no job lookup to do its work."""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.errors import BadMessage
from common.jobs import MATCH_MODES, JobSpec

SCHEMA_VERSION = 1
PUBSUB_MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


@dataclass(frozen=True)
class ClassifyMessage:
    job_id: str
    name: str
    spec: JobSpec

    def to_bytes(self) -> bytes:
        body = {"v": SCHEMA_VERSION, "job_id": self.job_id, "name": self.name, **self.spec.to_dict()}
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> ClassifyMessage:
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BadMessage(f"message data is not JSON: {exc}") from None
        return cls.from_dict(body)

    @classmethod
    def from_dict(cls, body: object) -> ClassifyMessage:
        if not isinstance(body, dict):
            raise BadMessage("message data must be a JSON object")
        if body.get("v") != SCHEMA_VERSION:
            raise BadMessage(f"unsupported message schema version {body.get('v')!r}")
        try:
            job_id, name = body["job_id"], body["name"]
            classes = body["classes"]
            spec = JobSpec(classes=tuple(classes), bucket=body["bucket"], source_prefix=body["source_prefix"],
                           top_k=body["top_k"], min_score=body["min_score"], match=body.get("match", "hierarchy"))
        except (KeyError, TypeError) as exc:
            raise BadMessage(f"message is missing or mistypes a field: {exc}") from None
        checks = [
            isinstance(job_id, str) and bool(job_id),
            isinstance(name, str) and bool(name),
            isinstance(classes, list) and all(isinstance(c, str) and c for c in classes),
            isinstance(spec.bucket, str) and isinstance(spec.source_prefix, str),
            isinstance(spec.top_k, int) and not isinstance(spec.top_k, bool) and spec.top_k > 0,
            isinstance(spec.min_score, (int, float)) and not isinstance(spec.min_score, bool),
            spec.match in MATCH_MODES,
        ]
        if not all(checks):
            raise BadMessage("message fields have the wrong types")
        return cls(job_id=job_id, name=name, spec=spec)


def from_cloud_event(event_type: str, data: Mapping[str, Any] | None) -> ClassifyMessage:
    """Unwrap a Pub/Sub messagePublished CloudEvent."""
    if event_type != PUBSUB_MESSAGE_PUBLISHED:
        raise BadMessage(f"unexpected event type {event_type!r}")
    try:
        encoded = data["message"]["data"]  # type: ignore[index]
        raw = base64.b64decode(encoded, validate=True)
    except (KeyError, TypeError, binascii.Error) as exc:
        raise BadMessage(f"event carries no base64 message data: {exc}") from None
    return ClassifyMessage.from_bytes(raw)
