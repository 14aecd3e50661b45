"""create_job is safe to retry: Pub/Sub fails part way through a 400-image fan-out on the emulators (publisher
batches of 100 either side of the failure), the client gets a 503 with Retry-After, retries, and the pipeline ends
with exactly one complete job and exact counts. The failure is real to the adapter: the publisher client's
futures fail with the API error Pub/Sub returns when it is unavailable, and the classify_image function (the real
one, under functions-framework) is fed by the emulator."""
from __future__ import annotations

import dataclasses

import concurrent.futures
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from google.api_core import exceptions as gexc
from PIL import Image

from tests.conftest import MOBILENET_TFLITE

pytestmark = [pytest.mark.emulator, pytest.mark.slow]
IMAGES = 400
FAIL_FROM = 160  # the 161st publish and every one after it fail, until Pub/Sub "recovers"


class FlakyPublisherClient:
    """The real PublisherClient, whose publishes fail with ServiceUnavailable from the Nth on while `failing`."""

    def __init__(self, inner, fail_from: int) -> None:
        self._inner = inner
        self._fail_from = fail_from
        self._count = 0
        self._lock = threading.Lock()
        self.failing = False

    def start_failing(self) -> None:
        with self._lock:
            self._count = 0
            self.failing = True

    def publish(self, topic, data, **attributes):
        with self._lock:
            self._count += 1
            fail = self.failing and self._count > self._fail_from
        if fail:
            future: concurrent.futures.Future = concurrent.futures.Future()
            future.set_exception(gexc.ServiceUnavailable("the Pub/Sub service is unavailable (injected)"))
            return future
        return self._inner.publish(topic, data, **attributes)


def tiny_jpeg(i: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), ((i * 37) % 256, (i * 91) % 256, (i * 53) % 256)).save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def pipeline(emulators, shared):
    """The emulated pipeline (classify_image fed by a push subscription) and an in-process create_job whose
    publisher client can be made to fail."""
    from common import bootstrap
    from common.adapters.gcp import GcsObjectStore, PubSubPublisher, storage_client
    from common.config import Settings
    from common.http import create_app
    from common.routes import Action
    from imgclassify.local_stack import LocalStack

    stack = LocalStack(emulators, bucket="retry-bucket", topic="classify-retry", subscription="classify-retry-push",
                       function_env={"MODEL": "mobilenet_v2", "MODEL_WEIGHTS": str(MOBILENET_TFLITE),
                                     "THREADS": "8"})
    stack.start()
    store = GcsObjectStore(storage_client(emulators.project))
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: store.write(stack.bucket, f"all/{i // 100:02d}/{i:04d}.jpg", tiny_jpeg(i)),
                      range(IMAGES)))
    settings = Settings(project=emulators.project, bucket=stack.bucket, topic=stack.topic)
    real = PubSubPublisher.make_client()
    flaky = FlakyPublisherClient(real, FAIL_FROM)
    service = bootstrap.cloud_app(settings, dataclasses.replace(
        bootstrap.cloud_ports(settings), objects=store,
        publisher=PubSubPublisher(flaky, real.topic_path(emulators.project, stack.topic))))
    jobs = service.ports.jobs
    app = create_app(bootstrap.handlers(Action.CREATE, Action.STATUS, application=lambda: service),
                     settings).test_client()
    yield app, flaky, jobs
    stack.stop()


def wait_until_complete(app, job_id: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        status = app.get(f"/classification-job/{job_id}").get_json()
        if status["complete"]:
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.5)


def results_recorded(jobs, job_id: str) -> int:
    return sum(1 for _ in jobs.results(job_id))


def test_a_retry_with_the_same_request_id_resumes_the_interrupted_job(pipeline):
    app, flaky, jobs = pipeline
    flaky.start_failing()
    body = {"classes": ["animal", "food"], "request_id": "uploader-batch-1"}

    first = app.post("/classification-job", json=body)

    assert first.status_code == 503 and first.headers["Retry-After"] == "5"
    assert first.get_json()["resumable"] is True
    job_id = first.get_json()["id"]
    interrupted = app.get(f"/classification-job/{job_id}").get_json()
    assert (interrupted["state"], interrupted["complete"]) == ("failed", False)
    assert "same request_id" in interrupted["error"]

    flaky.failing = False  # Pub/Sub is back; the client retries the same request
    retried = app.post("/classification-job", json=body)

    assert retried.status_code == 201 and retried.get_json()["id"] == job_id
    assert retried.get_json()["number_of_files"] == IMAGES and "error" not in retried.get_json()
    final = wait_until_complete(app, job_id)
    assert (final["state"], final["number_of_files"], final["processed"] + final["failed"]) == (
        "complete", IMAGES, IMAGES)
    assert results_recorded(jobs, job_id) == IMAGES  # 160 images were published twice, each counted once
    again = app.post("/classification-job", json=body)  # a late duplicate of the request changes nothing
    assert again.status_code == 201 and again.get_json()["processed"] + again.get_json()["failed"] == IMAGES


def test_without_a_request_id_the_interrupted_job_says_why_and_the_retry_completes(pipeline):
    app, flaky, jobs = pipeline
    flaky.start_failing()
    body = {"classes": ["animal", "food"]}

    first = app.post("/classification-job", json=body)

    assert first.status_code == 503 and first.get_json()["resumable"] is False
    abandoned = first.get_json()["id"]
    flaky.failing = False
    retried = app.post("/classification-job", json=body)
    assert retried.status_code == 201
    final = wait_until_complete(app, retried.get_json()["id"])
    assert (final["number_of_files"], final["processed"] + final["failed"]) == (IMAGES, IMAGES)
    # The first job never stays "listing": it is failed with its reason, and is not complete.
    first_status = app.get(f"/classification-job/{abandoned}").get_json()
    assert (first_status["state"], first_status["complete"]) == ("failed", False)
    assert "send a request_id" in first_status["error"]
