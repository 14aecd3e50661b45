"""The fan-out message: one per image, self-contained so classify_image needs no job lookup to do its work."""
from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.domain.errors import BadMessage
from common.domain.jobs import JobSpec
from common.domain.options import MatchMode, choices

SCHEMA_VERSION = 1
PUBSUB_MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


@dataclass(frozen=True)
class ClassifyMessage:
    job_id: str
    name: str
    spec: JobSpec
    content: str | None = None  # the object's content fingerprint from the listing (md5), when known

    def to_bytes(self) -> bytes:
        body = {"v": SCHEMA_VERSION, "job_id": self.job_id, "name": self.name, **self.spec.to_dict()}
        if self.content:
            body["content"] = self.content
        return json.dumps(body, separators=(",", ":")).encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes) -> ClassifyMessage:
        try:
            body = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise BadMessage(f"message data is not JSON: {exc}") from None
        return cls.from_dict(body)

    @classmethod
    def from_dict(cls, body: object) -> ClassifyMessage:
        if not isinstance(body, dict):
            raise BadMessage("message data must be a JSON object")
        if body.get("v") != SCHEMA_VERSION:
            raise BadMessage(f"unsupported message schema version {body.get('v')!r}")
        try:
            job_id, name, classes = body["job_id"], body["name"], body["classes"]
            bucket, prefix, top_k, min_score = body["bucket"], body["source_prefix"], body["top_k"], body["min_score"]
        except (KeyError, TypeError) as exc:
            raise BadMessage(f"message is missing a field: {exc}") from None
        match = body.get("match", MatchMode.HIERARCHY.value)
        content, dry_run = body.get("content"), body.get("dry_run", False)
        checks = [
            content is None or isinstance(content, str),
            isinstance(dry_run, bool),
            isinstance(job_id, str) and bool(job_id),
            isinstance(name, str) and bool(name),
            isinstance(classes, list) and all(isinstance(c, str) and c for c in classes),
            isinstance(bucket, str) and isinstance(prefix, str),
            isinstance(top_k, int) and not isinstance(top_k, bool) and top_k > 0,
            isinstance(min_score, (int, float)) and not isinstance(min_score, bool),
            isinstance(match, str) and match in choices(MatchMode),
        ]
        if not all(checks):
            raise BadMessage("message fields have the wrong types")
        spec = JobSpec(classes=tuple(classes), bucket=bucket, source_prefix=prefix, top_k=top_k,
                       min_score=float(min_score), match=MatchMode(match), dry_run=dry_run)
        return cls(job_id=job_id, name=name, spec=spec, content=content or None)


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
