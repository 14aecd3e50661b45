"""The fan-out message: one per image, self-contained so classify_image needs no job lookup to do its work."""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from common.domain.errors import BadMessage
from common.domain.jobs import JobRecord, JobSpec

SCHEMA_VERSION = 1
PUBSUB_MESSAGE_PUBLISHED = "google.cloud.pubsub.topic.v1.messagePublished"


@dataclass(frozen=True)
class ClassifyMessage:
    job_id: str
    name: str
    spec: JobSpec
    content: str | None = None  # the object's content fingerprint from the listing (md5), when known
    sig: str = ""  # signature(job's message_key, job_id, name): who published it had the job's record

    @classmethod
    def for_job(cls, job: JobRecord, name: str, content: str | None = None) -> ClassifyMessage:
        """The message for one of the job's objects, signed with the job's key."""
        return cls(job.id, name, job.spec, content, signature(job.message_key, job.id, name))

    def signed_by(self, job: JobRecord) -> bool:
        """Whether the job's record signed this message (a job recorded before messages were signed: always)."""
        return not job.message_key or hmac.compare_digest(self.sig, signature(job.message_key, self.job_id,
                                                                             self.name))

    def to_bytes(self) -> bytes:
        body = {"v": SCHEMA_VERSION, "job_id": self.job_id, "name": self.name, **self.spec.to_dict()}
        if self.content:
            body["content"] = self.content
        if self.sig:
            body["sig"] = self.sig
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
        job_id, name, content, sig = body.get("job_id"), body.get("name"), body.get("content"), body.get("sig", "")
        if not (isinstance(job_id, str) and job_id and isinstance(name, str) and name) or \
                not (content is None or isinstance(content, str)) or not isinstance(sig, str):
            raise BadMessage("message needs a job_id and a name (strings), a content fingerprint or none, and a "
                             "signature or none")
        try:
            spec = JobSpec.from_dict(body)  # the job's spec as JobSpec.to_dict wrote it, every field of it
        except ValueError as exc:
            raise BadMessage(f"message fields are wrong: {exc}") from None
        return cls(job_id=job_id, name=name, spec=spec, content=content or None, sig=sig)


def new_message_key() -> str:
    return secrets.token_hex(16)


def signature(key: str, job_id: str, name: str) -> str:
    """HMAC-SHA256 of the job and object names under the job's key ("" without a key)."""
    if not key:
        return ""
    text = f"{job_id}\n{name}".encode("utf-8", "surrogateescape")
    return hmac.new(bytes.fromhex(key), text, hashlib.sha256).hexdigest()[:32]


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
