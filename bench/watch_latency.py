"""Latency from upload to copy for watch jobs: embedded (`imgclassify watch`, filesystem events, a file joins once
its size has been stable for 1 s) and on the emulators (upload with the official storage client, fake-gcs-server's
notification, object_arrived, classify_image). Photos are uploaded one at a time, 0.5 s apart; the class "entity"
matches every photo, so each upload should produce one copy.

  .venv/bin/python bench/watch_latency.py --photos 30 > bench/results/watch-latency.json

Run it alone: nothing else on the CPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TFLITE = REPO.parent / "shared/models/mobilenet_v2/tf2_mobilenet_v2_1.0_224_ptq.tflite"


def summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    return {"p50_s": round(statistics.median(ordered), 3), "p95_s": round(ordered[int(0.95 * (len(ordered) - 1))], 3),
            "max_s": round(ordered[-1], 3), "uploads": len(ordered)}


def wait_for(path_exists, timeout: float = 60) -> float:
    deadline = time.monotonic() + timeout
    while not path_exists():
        if time.monotonic() > deadline:
            raise TimeoutError("no copy appeared")
        time.sleep(0.02)
    return time.monotonic()


def embedded(photos: list[Path]) -> dict:
    imgclassify = str(Path(sys.executable).with_name("imgclassify"))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "all").mkdir()
        watcher = subprocess.Popen([imgclassify, "watch", str(root), "--classes", "entity", "--model", "mobilenet_v2",
                                    "--weights", str(TFLITE)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   text=True)
        while "watching" not in watcher.stderr.readline():
            pass
        latencies = []
        for path in photos:
            shutil.copy(path, root / "all" / path.name)
            started = time.monotonic()
            latencies.append(wait_for(lambda path=path: (root / "entity" / path.name).exists()) - started)
            time.sleep(0.5)
        watcher.send_signal(signal.SIGINT)
        watcher.wait(timeout=60)
    return summary(latencies)


def emulated(photos: list[Path]) -> dict:
    import requests

    from common.adapters.gcp import storage_client
    from imgclassify.emulation import Emulators
    from imgclassify.local_stack import LocalStack

    with Emulators() as emulators:
        os.environ.update(emulators.env)
        stack = LocalStack(emulators, function_env={"MODEL": "mobilenet_v2", "MODEL_WEIGHTS": str(TFLITE),
                                                    "THREADS": "8"})
        stack.start()
        try:
            bucket = storage_client(emulators.project).bucket(stack.bucket)
            requests.post(f"{stack.gateway_url}/classification-job", json={"classes": ["entity"], "watch": True},
                          timeout=60)
            latencies = []
            for path in photos:
                started = time.monotonic()
                bucket.blob(f"all/{path.name}").upload_from_filename(str(path))
                latencies.append(wait_for(lambda path=path: bucket.get_blob(f"entity/{path.name}") is not None)
                                 - started)
                time.sleep(0.5)
        finally:
            stack.stop()
    return summary(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=30)
    args = parser.parse_args()
    from bench.machine import describe
    from common.logs import send_logs_to_stderr

    send_logs_to_stderr()
    photos = sorted((REPO.parent / "shared/photos/imagenet-dev").iterdir())[:args.photos]
    print(json.dumps({"machine": describe(), "embedded": embedded(photos), "emulators": emulated(photos),
                      "note": "seconds from the upload (write) returning to the copy existing; embedded includes "
                              "the 1 s a file must stay unchanged before it joins"}, indent=2))


if __name__ == "__main__":
    main()
