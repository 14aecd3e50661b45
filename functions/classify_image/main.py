"""Pub/Sub-triggered function: classify one image of a job. Logic lives in common/.

Return normally to ack; raise to have Pub/Sub redeliver (only for errors that may pass).
"""
import functools

import functions_framework
from cloudevents.http import CloudEvent

from common.backends import service_from_env
from common.errors import BadMessage
from common.logs import get_logger
from common.messages import from_cloud_event

log = get_logger("classify_image")
_service = functools.partial(service_from_env, with_publisher=False)


@functions_framework.cloud_event
def classify_image(event: CloudEvent) -> None:
    try:
        message = from_cloud_event(event["type"], event.data)
    except BadMessage as exc:
        # Redelivery cannot fix a malformed message: log it and ack.
        log.error("dropping malformed message", extra={"error": str(exc), "event_id": event["id"]})
        return
    try:
        _service().classify(message)
    except Exception:
        # Raising makes Pub/Sub redeliver (then dead-letter): say so in a structured entry first.
        log.exception("classification failed; the message will be redelivered",
                      extra={"job_id": message.job_id, "object": message.name, "event_id": event["id"]})
        raise
