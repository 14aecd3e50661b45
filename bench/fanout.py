"""create_job fan-out on the emulators: list N objects under all/ and publish one message each.

Prints JSON: objects listed per second, messages published per second, and create_job end to end.

  .venv/bin/python bench/fanout.py --objects 10000 > bench/results/fanout.json
"""
from __future__ import annotations

import dataclasses

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.logs import send_logs_to_stderr  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--objects", type=int, default=10000)
    parser.add_argument("--flat", action="store_true", help="all objects directly under all/ (no sub-folders)")
    args = parser.parse_args()
    send_logs_to_stderr()

    from google.cloud import pubsub_v1

    from common.adapters.gcp import GcsObjectStore, storage_client
    from common import bootstrap
    from common.config import Settings
    from imgclassify.emulation import Emulators

    with Emulators() as emulators:
        os.environ.update(emulators.env)
        client = storage_client(emulators.project)
        client.create_bucket("fanout")
        store = GcsObjectStore(client)
        started = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: store.write("fanout", f"all/{i:06d}.jpg" if args.flat
                                                else f"all/{i // 1000:02d}/{i:06d}.jpg", b"x"), range(args.objects)))
        upload_seconds = time.perf_counter() - started

        publisher = pubsub_v1.PublisherClient()
        topic = publisher.topic_path(emulators.project, "fanout")
        publisher.create_topic(name=topic)
        subscriber = pubsub_v1.SubscriberClient()
        subscription = subscriber.subscription_path(emulators.project, "fanout-count")
        subscriber.create_subscription(name=subscription, topic=topic)

        settings = Settings(project=emulators.project, bucket="fanout", topic="fanout")
        create_job = bootstrap.cloud_app(settings, dataclasses.replace(bootstrap.cloud_ports(settings),
                                                                       objects=store)).create_job
        # A warm instance: the class index is loaded and the Firestore channel is open (cold start is apart).
        create_job({"classes": ["dog"], "source_prefix": "empty/"})
        started = time.perf_counter()
        listed = sum(1 for _ in store.list_names("fanout", "all/"))
        list_seconds = time.perf_counter() - started

        started = time.perf_counter()
        job = create_job({"classes": ["dog"]})
        create_seconds = time.perf_counter() - started

        received = 0
        deadline = time.monotonic() + 120
        while received < args.objects and time.monotonic() < deadline:
            response = subscriber.pull(subscription=subscription, max_messages=1000, timeout=10)
            if response.received_messages:
                subscriber.acknowledge(subscription=subscription,
                                       ack_ids=[m.ack_id for m in response.received_messages])
            received += len(response.received_messages)
        subscriber.close()

    print(json.dumps({
        "objects": args.objects, "layout": "flat" if args.flat else "10 sub-folders of 1,000", "listed": listed, "number_of_files": job.number_of_files,
        "messages_received_by_a_subscriber": received,
        "list_seconds": round(list_seconds, 3), "objects_listed_per_second": round(listed / list_seconds),
        "create_job_seconds": round(create_seconds, 3),
        "create_job_images_per_second": round(job.number_of_files / create_seconds),
        "upload_seconds_setup": round(upload_seconds, 1),
        "note": "create_job on a warm instance = job record + list and publish (overlapped) + wait for every "
                "publish + total; local emulators, 2 vCPU",
    }, indent=2))


if __name__ == "__main__":
    main()
