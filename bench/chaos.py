"""Chaos on the emulators at size: one job over `--images` photos while classify_image's instance is SIGKILLed at
random moments, duplicate and forged messages are published beside the real ones, and the Pub/Sub emulator is
restarted once mid-job (its messages lost) and the job re-driven with POST …/retry. At the end: processed + failed
must equal the images, every copy byte-equal to its photo, none made twice, no forged object copied.

The photos are the dev photos under numbered names (the prediction store answers repeats, so the model is not the
bottleneck; the counting, the copies and the redeliveries are what is exercised).

  .venv/bin/python bench/chaos.py --images 10000 --kills 5
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/photos/imagenet-dev")
    parser.add_argument("--weights", type=Path,
                        default=REPO.parent / "shared/models/mobilenet_v2/tf2_mobilenet_v2_1.0_224_ptq.tflite")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from bench.machine import describe, emit
    from common.adapters.gcp import GcsObjectStore, PubSubPublisher, storage_client
    from common.domain.jobs import JobSpec
    from common.domain.messages import ClassifyMessage
    from imgclassify.emulation import Emulators, environ
    from imgclassify.local_stack import LocalStack

    rng = random.Random(args.seed)
    photos = sorted(args.photos.iterdir())
    with Emulators() as emulators, environ(emulators.env):
        stack = LocalStack(emulators, bucket="chaos-bench", topic="chaos-bench", subscription="chaos-bench-push",
                           ack_deadline=10, function_env={"MODEL": "mobilenet_v2", "MODEL_WEIGHTS": str(args.weights),
                                                          "THREADS": "16"})
        stack.start()
        try:
            store = GcsObjectStore(storage_client(emulators.project))
            for i in range(args.images):
                store.write(stack.bucket, f"all/{i:06d}-{photos[i % len(photos)].name}",
                            photos[i % len(photos)].read_bytes())
            store.write(stack.bucket, "private/secret.jpg", photos[0].read_bytes())
            started = time.monotonic()
            job = requests.post(f"{stack.gateway_url}/classification-job", json={"classes": ["dogs", "birds"]},
                                timeout=600).json()
            status_url = f"{stack.gateway_url}/classification-job/{job['id']}"

            def done() -> int:
                status = requests.get(status_url, timeout=30).json()
                return status["processed"] + status["failed"]

            from google.cloud import pubsub_v1

            publisher = PubSubPublisher(pubsub_v1.PublisherClient(), pubsub_v1.PublisherClient.topic_path(
                emulators.project, stack.topic))
            spec = JobSpec(("dogs", "birds"), stack.bucket)
            names = [f"all/{i:06d}-{photos[i % len(photos)].name}" for i in range(args.images)]
            duplicates = rng.sample(names, min(200, len(names)))
            forged = [ClassifyMessage(job["id"], "private/secret.jpg", spec),
                      ClassifyMessage("f" * 32, names[0], spec)]
            from google.cloud import firestore

            from common.adapters.gcp import FirestoreJobStore

            record = FirestoreJobStore(firestore.Client(project=emulators.project), "classification_jobs",
                                       16).get_job(job["id"])  # its message key: real redeliveries are signed
            publisher.publish_all([ClassifyMessage.for_job(record, n) for n in duplicates] + forged)
            marks = sorted(rng.sample(range(args.images // 10, args.images * 9 // 10), args.kills))
            restart_at = args.images // 2
            killed, restarted, retried = 0, False, None
            deadline = time.monotonic() + 3 * 3600
            while (progress := done()) < args.images:
                assert time.monotonic() < deadline, progress
                if killed < len(marks) and progress >= marks[killed]:
                    stack.kill("classify_image")
                    killed += 1
                if not restarted and progress >= restart_at:
                    emulators.restart_pubsub()
                    stack.recreate_messaging()
                    restarted = True
                    time.sleep(3 * stack.ack_deadline)
                    retried = requests.post(f"{status_url}/retry", json={}, timeout=600).json()["republished"]
                time.sleep(1)
            elapsed = time.monotonic() - started
            status = requests.get(status_url, timeout=30).json()
            copies = [n for c in ("dogs", "birds") for n in store.list_names(stack.bucket, c + "/")]
            equal = all(store.read(stack.bucket, c) == store.read(stack.bucket, "all/" + c.split("/", 1)[1])
                        for c in copies)
            result = {"benchmark": "chaos", "machine": describe(), "images": args.images, "kills": killed,
                      "instances_replaced": stack.restarts.get("classify_image", 0),
                      "pubsub_restarted": restarted, "republished_by_retry": retried,
                      "duplicates_published": len(duplicates), "forged_published": len(forged),
                      "seconds": round(elapsed, 1), "processed": status["processed"], "failed": status["failed"],
                      "exact": status["processed"] + status["failed"] == args.images and status["complete"],
                      "copies": len(copies), "matches": sum(status["matches"].values()),
                      "copies_equal_matches": len(copies) == sum(status["matches"].values()),
                      "copies_byte_equal": equal, "copies_made_twice": sum(" (1)" in c for c in copies),
                      "forged_copied": any("secret" in c for c in copies)}
        finally:
            stack.stop()
    emit(result, args.out)


if __name__ == "__main__":
    main()
