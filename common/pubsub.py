"""The Pub/Sub entry point's policy, shared by the classify_image function and anything that serves push
deliveries the same way: a malformed message is logged and acked; the use case's errors propagate (it raises only
what may pass, so raising means "redeliver")."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from common.domain.errors import BadMessage, ServiceError
from common.domain.messages import ClassifyMessage, from_cloud_event
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
