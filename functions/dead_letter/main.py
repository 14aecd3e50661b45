"""Pub/Sub-triggered function on the dead-letter topic: a message Pub/Sub gave up on is recorded, so its job
finishes — an image as failed "gave up after N deliveries", a storage notification's object as failed in the watch
jobs holding it. Only a name the job could have published counts: the name is checked against the bucket. Logic
lives in common/."""
import functions_framework
from cloudevents.http import CloudEvent

from common import bootstrap
from common.pubsub import handle_dead_letter


@functions_framework.cloud_event
def dead_letter(event: CloudEvent) -> object:
    return handle_dead_letter(event["type"], event["id"], event.data, bootstrap.dead_letter_handler)
