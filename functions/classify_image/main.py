"""Pub/Sub-triggered function: classify one image of a job. Logic lives in common/.

Return normally to ack; raise to have Pub/Sub redeliver (the use case raises only for errors that may pass).
"""
import functions_framework
from cloudevents.http import CloudEvent

from common import bootstrap
from common.domain.results import ImageResult
from common.pubsub import handle_event, warm_up

# Load the model when the instance starts, not on its first delivery: the first image does not pay for it, and a
# misconfigured instance says so in a structured log entry at once (deliveries then mark their jobs stalled).
warm_up(bootstrap.classify_image_handler)


@functions_framework.cloud_event
def classify_image(event: CloudEvent) -> ImageResult | None:
    return handle_event(event["type"], event["id"], event.data, bootstrap.classify_image_handler)
