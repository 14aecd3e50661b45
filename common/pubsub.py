"""The Pub/Sub entry point's policy, shared by the classify_image function and anything that serves push
deliveries the same way: a malformed message is logged and acked; the use case's errors propagate (it raises only
what may pass, so raising means "redeliver")."""
from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

from common.domain.errors import BadMessage, ServiceError
from common.domain.messages import PUBSUB_MESSAGE_PUBLISHED, ClassifyMessage, from_cloud_event
from common.domain.results import ImageResult
from common.logs import get_logger

log = get_logger("pubsub")

Handler = Callable[[ClassifyMessage], ImageResult | None]


def handle_event(event_type: str, event_id: str, data: Mapping[str, Any] | None,
                 handler: Callable[[], Handler]) -> ImageResult | None:
    """Ack (return) or redeliver (raise). Returns the result recorded, None for duplicates and dropped messages."""
    try:
        message = from_cloud_event(event_type, data)
    except BadMessage as exc:
        log.error("dropping malformed message", extra={"error": str(exc), "event_id": event_id})
        return None
    try:
        return handler()(message)
    except Exception:
        log.exception("classification failed; the message will be redelivered",
                      extra={"job_id": message.job_id, "object": message.name, "event_id": event_id})
        raise


def warm_up(handler: Callable[[], Handler]) -> None:
    """Build the handler and load its model now; a failure is logged (structured) and left for deliveries to
    report on their jobs, never raised: an instance that cannot start would only be restarted, silently."""
    try:
        built = handler()
        load = getattr(built, "load_model", None)
        if load is not None:
            load()
    except (ServiceError, OSError) as exc:
        log.error("classify_image cannot load its model", extra={"error": str(exc)})


STORAGE_FINALIZE = "OBJECT_FINALIZE"


def handle_object_event(event_type: str, event_id: str, data: Mapping[str, Any] | None,
                        handler: Callable[[], Callable[[str, str, str | None], list[str]]]) -> list[str]:
    """A Cloud Storage notification (JSON_API_V1) pushed through Pub/Sub: an object written under a watch job's
    prefix joins it. Other events (deletes, metadata) and malformed messages are acked and dropped."""
    message = (data or {}).get("message") if isinstance(data, Mapping) else None
    attributes = message.get("attributes") if isinstance(message, Mapping) else None
    if event_type != PUBSUB_MESSAGE_PUBLISHED or not isinstance(attributes, Mapping):
        log.error("dropping a message that is not a storage notification", extra={"event_id": event_id})
        return []
    if attributes.get("eventType") != STORAGE_FINALIZE:
        return []
    bucket, name = attributes.get("bucketId"), attributes.get("objectId")
    if not isinstance(bucket, str) or not isinstance(name, str) or not bucket or not name:
        log.error("dropping a storage notification without bucket or object", extra={"event_id": event_id})
        return []
    content = None
    try:
        encoded = message.get("data") if isinstance(message, Mapping) else None
        metadata = json.loads(base64.b64decode(encoded or b""))
        md5 = metadata.get("md5Hash") if isinstance(metadata, dict) else None
        content = f"md5:{md5}" if isinstance(md5, str) and md5 else None
    except (ValueError, TypeError):
        pass  # the fingerprint is an optimisation: classify_image computes it from the bytes
    return handler()(bucket, name, content)


DELIVERY_COUNT = "CloudPubSubDeadLetterSourceDeliveryCount"  # set by Pub/Sub on every dead-lettered message


def handle_dead_letter(event_type: str, event_id: str, data: Mapping[str, Any] | None,
                       handler: Callable[[], Any]) -> object:
    """A message from the dead-letter topic: an image's (recorded as given up) or a storage notification's (the
    object fails in the watch jobs that hold it). Anything else is logged and acked: there is nowhere further."""
    message = (data or {}).get("message") if isinstance(data, Mapping) else None
    attributes = (message.get("attributes") if isinstance(message, Mapping) else None) or {}
    try:
        deliveries: int | None = int(attributes.get(DELIVERY_COUNT, ""))
    except ValueError:
        deliveries = None
    if attributes.get("eventType") == STORAGE_FINALIZE:
        bucket, name = attributes.get("bucketId"), attributes.get("objectId")
        if isinstance(bucket, str) and isinstance(name, str) and bucket and name:
            return handler().object_event(bucket, name, deliveries)
        log.error("dropping a dead letter: a storage notification without bucket or object",
                  extra={"event_id": event_id})
        return None
    if isinstance(attributes, Mapping) and attributes.get("eventType"):
        return None  # a delete or metadata notification: nothing was lost
    try:
        parsed = from_cloud_event(event_type, data)
    except BadMessage as exc:
        log.error("dropping a malformed dead letter", extra={"error": str(exc), "event_id": event_id})
        return None
    return handler().image(parsed, deliveries)
