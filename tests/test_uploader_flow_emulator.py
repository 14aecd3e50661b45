"""The downloader-uploader flow on the emulators (issue 12): an uploader creates a watch job with a callback to a
local receiver, uploads 30 real photos to all/ with the official storage client in three bursts — before the job,
during its listing, after — closes the job, and checks: every photo counted once, copies in the right prefixes, one
event on the job-events topic, one callback with a valid signature. fake-gcs-server publishes each object write to
the Pub/Sub emulator as Cloud Storage notifications would; object_arrived and classify_image run under
functions-framework."""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time

import pytest
import requests

from tests.conftest import MOBILENET_TFLITE

pytestmark = [pytest.mark.emulator, pytest.mark.slow]
KEY = "uploader-shared-key"


class Receiver(http.server.ThreadingHTTPServer):
    """A local callback receiver that records every POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def stack(emulators, shared):
    from imgclassify.local_stack import LocalStack

    local = LocalStack(emulators, bucket="uploads", topic="classify-uploads", subscription="uploads-push",
                       job_events_topic="job-events-uploads",
                       function_env={"MODEL": "mobilenet_v2", "MODEL_WEIGHTS": str(MOBILENET_TFLITE),
                                     "SERVICE_KEY": KEY, "THREADS": "8"})
    local.start()
    yield local
    local.stop()


def test_uploads_before_during_and_after_listing_are_each_sorted_once_and_completion_is_announced(stack, shared):
    from google.cloud import pubsub_v1, storage

    from common.adapters.gcp import storage_client
    from common.usecases.announce_completion import SIGNATURE_HEADER

    photos = sorted((shared / "photos/imagenet-dev").iterdir())[:30]
    bucket = storage_client(stack.emulators.project).bucket(stack.bucket)
    assert isinstance(bucket, storage.Bucket)
    subscriber = pubsub_v1.SubscriberClient()
    events = subscriber.subscription_path(stack.emulators.project, "job-events-uploader")
    subscriber.create_subscription(name=events, topic=f"projects/{stack.emulators.project}/topics/"
                                                     f"{stack.job_events_topic}")
    receiver = Receiver()
    headers = {"Authorization": KEY}
    uploaded_at: dict[str, float] = {}

    def upload(batch) -> None:
        for path in batch:
            bucket.blob(f"all/{path.name}").upload_from_filename(str(path))
            uploaded_at[f"all/{path.name}"] = time.monotonic()

    upload(photos[:10])  # before the job
    during = threading.Thread(target=upload, args=(photos[10:20],))
    during.start()  # while create_job lists
    job = requests.post(f"{stack.gateway_url}/classification-job", headers=headers, timeout=60, json={
        "classes": ["dog", "bird", "fish"], "watch": True,
        "callback_url": f"http://127.0.0.1:{receiver.server_address[1]}/done"}).json()
    during.join()
    assert job["state"] == "watching"
    upload(photos[20:])  # after

    deadline = time.monotonic() + 180
    while (status := requests.get(job["status_url"], headers=headers, timeout=10).json())["number_of_files"] < 30 \
            or status["processed"] + status["failed"] < 30:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["state"] == "watching" and not receiver.posts
    closed = requests.post(f"{stack.gateway_url}/classification-job/{job['id']}/close", headers=headers, json={},
                           timeout=60).json()
    assert closed["state"] == "complete"

    final = requests.get(job["status_url"], headers=headers, timeout=10).json()
    assert (final["number_of_files"], final["processed"], final["failed"]) == (30, 30, 0)
    copies = {blob.name for c in ("dog", "bird", "fish") for blob in bucket.list_blobs(prefix=f"{c}/")}
    assert len(copies) == sum(final["matches"].values()) > 0
    assert all(bucket.blob(c).download_as_bytes() == bucket.blob("all/" + c.split("/", 1)[1]).download_as_bytes()
               for c in copies)
    received = []
    for _ in range(5):
        response = subscriber.pull(subscription=events, max_messages=10, timeout=5)
        received += [json.loads(m.message.data) for m in response.received_messages]
        if response.received_messages:
            subscriber.acknowledge(subscription=events, ack_ids=[m.ack_id for m in response.received_messages])
    assert [(e["job_id"], e["state"], e["number_of_files"]) for e in received] == [(job["id"], "complete", 30)]
    deadline = time.monotonic() + 60  # the callback is sent in the background once the job completes
    while (sent := requests.get(job["status_url"], headers=headers, timeout=10).json()).get(
            "callback", {}).get("status") in (None, "pending"):
        assert time.monotonic() < deadline, sent
        time.sleep(0.2)
    assert sent["callback"]["status"] == "delivered", sent["callback"]
    [(callback_headers, body)] = receiver.posts
    expected = "sha256=" + hmac.new(KEY.encode(), body, hashlib.sha256).hexdigest()
    assert callback_headers[SIGNATURE_HEADER] == expected and json.loads(body)["complete"] is True
    receiver.shutdown()
    subscriber.close()
