"""Instances dying mid-image on the emulators: classify_image's process is killed (os._exit, as a lost instance)
after the copies but before counting, and after counting but before the ack. functions-framework's gunicorn
starts a new worker, Pub/Sub redelivers, and the job completes with exact counts and no extra copies."""
from __future__ import annotations

import json
import time

import pytest
import requests

from tests.conftest import MOBILENET_TFLITE, REPO_ROOT

pytestmark = [pytest.mark.emulator, pytest.mark.slow]
PHOTOS = ["cat.bmp", "pets.jpg", "parrot.jpg", "hot_dog.jpg", "imprinting_dog_test_0.bmp", "bird.bmp"]


@pytest.fixture(scope="module")
def crashing_stack(emulators, shared, tmp_path_factory):
    from imgclassify.local_stack import LocalStack

    crash_dir = tmp_path_factory.mktemp("crashes")
    observed = tmp_path_factory.mktemp("observed")
    stack = LocalStack(emulators, bucket="crash-bucket", topic="classify-crash", subscription="classify-crash-push",
                       ack_deadline=10, sources={"classify_image": str(REPO_ROOT / "tests/targets/classify_image.py")},
                       function_env={"MODEL": "mobilenet_v2", "MODEL_WEIGHTS": str(MOBILENET_TFLITE),
                                     "IMGCLASSIFY_CRASH": "after_copy,after_count",
                                     "IMGCLASSIFY_CRASH_DIR": str(crash_dir), "OBSERVE_DIR": str(observed),
                                     # One request per worker: a crash then kills only the image it is about.
                                     "THREADS": "1"})
    stack.start()
    stack.crash_dir = crash_dir
    stack.observed = observed
    yield stack
    stack.stop()


def test_killed_after_copy_and_after_count_the_job_still_completes_exactly(crashing_stack, shared):
    from common.adapters.gcp import GcsObjectStore, storage_client

    store = GcsObjectStore(storage_client(crashing_stack.emulators.project))
    for name in PHOTOS:
        store.write(crashing_stack.bucket, f"all/{name}", (shared / "photos/coral" / name).read_bytes())

    job = requests.post(f"{crashing_stack.gateway_url}/classification-job",
                        json={"classes": ["dogs", "cats", "birds", "food"]}, timeout=60).json()
    deadline = time.monotonic() + 300
    while not (status := requests.get(job["status_url"], timeout=10).json())["complete"]:
        assert time.monotonic() < deadline, status
        time.sleep(0.5)

    # Each image's third delivery finds the result its second delivery recorded (that one died before the ack).
    def events() -> list[dict]:
        path = crashing_stack.observed / "events.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    while sum(e.get("job_id") == job["id"] and e.get("outcome") == "duplicate" for e in events()) < len(PHOTOS):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    # Every image crashed its instance twice: once after copying, once after counting.
    assert len(list(crashing_stack.crash_dir.iterdir())) == 2 * len(PHOTOS)
    assert (status["processed"], status["failed"], status["number_of_files"]) == (len(PHOTOS), 0, len(PHOTOS))
    copies = {n for c in ("dogs", "cats", "birds", "food") for n in store.list_names(crashing_stack.bucket, c + "/")}
    assert sum(status["matches"].values()) == len(copies)
    # The first attempt made the copies; no redelivery made one again.
    made = [e["target"] for e in events() if e["kind"] == "copy_written"]
    assert len(made) == len(set(made)) and set(made) == copies
    assert all(store.read(crashing_stack.bucket, c) == store.read(crashing_stack.bucket, "all/" + c.split("/", 1)[1])
               for c in copies)
