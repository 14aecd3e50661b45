import base64
import json

import pytest

from common.domain.errors import BadMessage
from common.domain.jobs import JobSpec
from common.domain.messages import PUBSUB_MESSAGE_PUBLISHED, ClassifyMessage, from_cloud_event

SPEC = JobSpec(("dog",), "images")


def _event_data(payload: bytes) -> dict:
    return {"message": {"data": base64.b64encode(payload).decode(), "messageId": "1"}}


def test_round_trip_through_a_pubsub_event():
    message = ClassifyMessage("a" * 32, "all/x.jpg", SPEC)
    assert from_cloud_event(PUBSUB_MESSAGE_PUBLISHED, _event_data(message.to_bytes())) == message


@pytest.mark.parametrize("payload", [
    b"not json",
    b"[]",
    json.dumps({"v": 2, "job_id": "a", "name": "b"}).encode(),
    json.dumps({"v": 1, "job_id": "a"}).encode(),
    json.dumps({"v": 1, "job_id": "a", "name": "b", "classes": "dog", "bucket": "i", "source_prefix": "all/",
                "top_k": 5, "min_score": 0}).encode(),
    json.dumps({"v": 1, "job_id": "a", "name": "b", "classes": ["dog"], "bucket": "i", "source_prefix": "all/",
                "top_k": "5", "min_score": 0}).encode(),
])
def test_bad_payloads_are_bad_messages(payload):
    with pytest.raises(BadMessage):
        from_cloud_event(PUBSUB_MESSAGE_PUBLISHED, _event_data(payload))


def test_wrong_event_type_and_missing_data_are_bad_messages():
    with pytest.raises(BadMessage):
        from_cloud_event("google.cloud.storage.object.v1.finalized", _event_data(b"{}"))
    with pytest.raises(BadMessage):
        from_cloud_event(PUBSUB_MESSAGE_PUBLISHED, {"message": {}})
    with pytest.raises(BadMessage):
        from_cloud_event(PUBSUB_MESSAGE_PUBLISHED, {"message": {"data": "***"}})
