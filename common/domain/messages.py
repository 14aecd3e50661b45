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
        job_id, name, content = body.get("job_id"), body.get("name"), body.get("content")
        if not (isinstance(job_id, str) and job_id and isinstance(name, str) and name) or \
                not (content is None or isinstance(content, str)):
            raise BadMessage("message needs a job_id and a name (strings), and a content fingerprint or none")
        try:
            spec = JobSpec.from_dict(body)  # the job's spec as JobSpec.to_dict wrote it, every field of it
        except ValueError as exc:
            raise BadMessage(f"message fields are wrong: {exc}") from None
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
