"""Chaos on the emulators (issue 21): classify_image's instance SIGKILLed mid-job (the supervisor replaces it, as
Cloud Run does), and the Pub/Sub emulator restarted mid-job (its messages lost: the job is re-driven with POST
…/retry). Each job completes with processed + failed equal to its images, every copy byte-equal to its photo,
none made twice. Own emulators: restarting Pub/Sub must not take other tests' subscriptions with it."""
from __future__ import annotations

import shutil
import time

import pytest
import requests

from tests.conftest import MOBILENET_TFLITE

pytestmark = [pytest.mark.emulator, pytest.mark.slow]
CLASSES = ["dogs", "birds", "food"]
IMAGES = 60


@pytest.fixture(scope="module")
def chaos(shared):
    from imgclassify.emulation import Emulators, environ
    from imgclassify.local_stack import LocalStack

    emulators = Emulators().start()
    stack = LocalStack(emulators, bucket="chaos", topic="classify-chaos", subscription="classify-chaos-push",
                       ack_deadline=10, function_env={"MODEL": "mobilenet_v2", "MODEL_WEIGHTS": str(MOBILENET_TFLITE),
                                                      "THREADS": "2"})
    try:
        stack.start()
        # Clients read the emulators' addresses when made: only that is inside environ, which restores what was set
        # before (the session's emulators, which later tests use).
        with environ(emulators.env):
            from common.adapters.gcp import GcsObjectStore, storage_client

            store = GcsObjectStore(storage_client(emulators.project))
        for photo in sorted((shared / "photos/imagenet-dev").iterdir())[:IMAGES]:
            store.write(stack.bucket, f"all/{photo.name}", photo.read_bytes())
        stack.store = store
        yield stack
    finally:
        stack.stop()
        emulators.stop()
        shutil.rmtree(emulators.log_dir, ignore_errors=True)


def status_of(stack, job: dict) -> dict:
    return requests.get(f"{stack.gateway_url}/classification-job/{job['id']}", timeout=10).json()


def wait_until(stack, job: dict, condition, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while not condition(status := status_of(stack, job)):
        assert time.monotonic() < deadline, status
        time.sleep(0.3)
    return status


def assert_exact(stack, status: dict, classes: list[str]) -> None:
    assert status["complete"] and status["processed"] + status["failed"] == IMAGES == status["number_of_files"]
    copies = [n for c in classes for n in stack.store.list_names(stack.bucket, c + "/")]
    assert len(copies) == len(set(copies)) == sum(status["matches"].values())
    assert not [c for c in copies if " (1)" in c]  # no copy made twice beside the first
    for copy in copies:
        assert stack.store.read(stack.bucket, copy) == stack.store.read(stack.bucket, "all/" + copy.split("/", 1)[1])


def publish_duplicates_and_forgeries(stack, job: dict, classes: list[str]) -> None:
    """Every image's message again, and forged ones: another prefix, a job nobody created, looser classes."""
    from google.cloud import pubsub_v1

    from common.adapters.gcp import PubSubPublisher
    from common.domain.jobs import JobSpec
    from common.domain.messages import ClassifyMessage

    stack.store.write(stack.bucket, "private/secret.jpg", stack.store.read(stack.bucket, next(
        stack.store.list_names(stack.bucket, "all/"))))
    spec = JobSpec(tuple(classes), stack.bucket)
    names = list(stack.store.list_names(stack.bucket, "all/"))
    loose = JobSpec(("private", *classes), stack.bucket, source_prefix="private/", min_score=0.0)
    from imgclassify.emulation import environ

    with environ(stack.emulators.env):
        publisher = PubSubPublisher(pubsub_v1.PublisherClient(),
                                    pubsub_v1.PublisherClient.topic_path(stack.emulators.project, stack.topic))
    from tests.test_pipeline_emulator import stored_job

    with environ(stack.emulators.env):
        record = stored_job(stack, job["id"])
    forged = [ClassifyMessage(job["id"], "private/secret.jpg", loose), ClassifyMessage("f" * 32, names[0], spec),
              ClassifyMessage(job["id"], names[0], spec),  # a real name, but not signed with the job's key
              ClassifyMessage(job["id"], "all/never-listed.jpg", spec, sig="0" * 32)]
    publisher.publish_all([ClassifyMessage.for_job(record, name) for name in names] + forged)


def test_classify_instances_killed_mid_job_are_replaced_and_the_job_completes_exactly(chaos):
    """With every message delivered twice or more and forged ones among them."""
    job = requests.post(f"{chaos.gateway_url}/classification-job", json={"classes": CLASSES}, timeout=60).json()
    publish_duplicates_and_forgeries(chaos, job, CLASSES)
    for when in (5, 25):
        wait_until(chaos, job, lambda s, when=when: s["processed"] + s["failed"] >= when)
        chaos.kill("classify_image")
    status = wait_until(chaos, job, lambda s: s["complete"])
    assert chaos.restarts.get("classify_image", 0) >= 2
    assert status["failed"] == 0
    assert_exact(chaos, status, CLASSES)
    copied = [n for c in ("private", *CLASSES) for n in chaos.store.list_names(chaos.bucket, c + "/")]
    assert [n for n in copied if n.endswith("secret.jpg")] == ["private/secret.jpg"]  # only the original


def test_a_pubsub_restart_mid_job_loses_messages_and_a_retry_finishes_the_job_exactly(chaos):
    classes = ["dogs", "cats"]
    job = requests.post(f"{chaos.gateway_url}/classification-job", json={"classes": classes}, timeout=60).json()
    wait_until(chaos, job, lambda s: s["processed"] + s["failed"] >= 10)
    chaos.emulators.restart_pubsub()
    chaos.recreate_messaging()
    time.sleep(2 * chaos.ack_deadline)  # whatever an instance was working on has finished or was lost
    stuck = status_of(chaos, job)
    assert not stuck["complete"], "the restart lost no message: nothing tested"
    retried = requests.post(f"{chaos.gateway_url}/classification-job/{job['id']}/retry", json={},
                            timeout=120).json()
    assert retried["republished"] == IMAGES - (stuck["processed"] + stuck["failed"])
    status = wait_until(chaos, job, lambda s: s["complete"])
    assert status["failed"] == 0
    assert_exact(chaos, status, classes)


def test_a_result_left_uncounted_by_a_dead_instance_is_counted_by_its_redelivery(emulators):
    """The window an instance can die in: its result created (pending), not yet counted. The redelivery, on
    another instance, counts it — once."""
    from google.cloud import firestore

    from common.adapters.gcp import FirestoreJobStore
    from common.domain.jobs import JobRecord, JobSpec, result_key
    from common.domain.results import ImageResult

    client = firestore.Client(project=emulators.project)
    dead, alive = (FirestoreJobStore(client, "tally-jobs", 4) for _ in range(2))
    job = JobRecord("c" * 32, JobSpec(("dog",), "images"), 2, "2026-12-02T00:00:00+00:00")
    dead.create_job(job)
    result = ImageResult("all/a.jpg", True, ("dog",))
    client.collection("tally-jobs").document(job.id).collection("results").document(
        result_key(result.name)).create({**result.to_dict(), "tally_pending": True})  # then the instance died

    assert alive.record_result(job.id, result) is True
    assert alive.record_result(job.id, result) is False
    assert alive.record_result(job.id, ImageResult("all/b.jpg", True, ())) is True
    counters = alive.counters(job.id)
    assert (counters.processed, counters.matches, counters.unmatched) == (2, {"dog": 1}, 1)
