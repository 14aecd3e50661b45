"""Pub/Sub-triggered function: a Cloud Storage notification (OBJECT_FINALIZE) for an object under a watch job's
prefix makes it join the job (each object once, for every open watch job on the bucket). Logic lives in common/."""
import functions_framework
from cloudevents.http import CloudEvent

from common import bootstrap
from common.pubsub import handle_object_event


@functions_framework.cloud_event
def object_arrived(event: CloudEvent) -> list[str]:
    return handle_object_event(event["type"], event["id"], event.data, bootstrap.object_arrived_handler)
