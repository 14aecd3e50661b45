"""The whole emulated pipeline, end to end: real photos in fake-gcs-server, POST through the gateway, push delivery
from the Pub/Sub emulator to classify_image under functions-framework, counters in the Firestore emulator, polling
job_status until complete.

Per trial: the functions are started fresh (the model loads at instance start), the photos uploaded to a new bucket,
then a cold job (the first one those instances serve) and a warm one (other classes, same photos). Where the time
goes per image comes from classify_image's structured "image classified" entries (`timings_ms`).

  .venv/bin/python bench/pipeline.py --trials 3 > bench/results/pipeline.json

Run it alone: nothing else on the CPUs (no test suite, no other emulator or benchmark).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_WEIGHTS = REPO / "build/bench-models/resnet50-none-b2-int8.tflite"


def run_job(gateway: str, classes: list[str]) -> dict:
    import requests

    started = time.perf_counter()
    job = requests.post(f"{gateway}/classification-job", json={"classes": classes}, timeout=300).json()
    created = time.perf_counter() - started
    while True:
        status = requests.get(f"{gateway}/classification-job/{job['id']}", timeout=30).json()
        if status["complete"]:
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    return {"id": job["id"], "images": status["number_of_files"], "seconds": round(seconds, 3),
            "create_job_seconds": round(created, 3), "images_per_second": round(status["number_of_files"] / seconds, 1),
            "failed": status["failed"]}


def stage_times(log_path: Path, job_id: str) -> dict[str, float]:
    per_stage: dict[str, list[float]] = {}
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        entry = json.loads(line)
        if entry.get("job_id") == job_id and entry.get("message") == "image classified":
            for stage, ms in entry["timings_ms"].items():
                per_stage.setdefault(stage, []).append(ms)
    return {stage: round(statistics.median(values), 2) for stage, values in sorted(per_stage.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/photos/imagenet-dev")
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--threads", type=int, default=8, help="classify_image's THREADS (concurrent deliveries)")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()

    from common.logs import send_logs_to_stderr

    send_logs_to_stderr()
    from common.adapters.gcp import GcsObjectStore, storage_client
    from imgclassify.emulation import Emulators
    from imgclassify.local_stack import LocalStack

    photos = sorted(p for p in args.photos.iterdir() if p.is_file())
    trials = []
    with Emulators() as emulators:
        os.environ.update(emulators.env)
        store = GcsObjectStore(storage_client(emulators.project))
        for trial in range(args.trials):
            stack = LocalStack(emulators, bucket=f"bench-{trial}", topic=f"bench-{trial}",
                               subscription=f"bench-{trial}-push",
                               function_env={"MODEL": args.model, "MODEL_WEIGHTS": str(args.weights.resolve()),
                                             "THREADS": str(args.threads),
                                             # an empty prediction store per trial: every cold job runs the model
                                             "PREDICTIONS_COLLECTION": f"predictions-{trial}-{uuid.uuid4().hex[:8]}"})
            started = time.perf_counter()
            stack.start()
            startup = time.perf_counter() - started
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda p, bucket=stack.bucket: store.write(bucket, f"all/{p.name}", p.read_bytes()),
                              photos))
            try:
                # cold: the instances' first job, every photo through the model; warm: the same photos again with
                # the same classes in a new job — the model is skipped (stored predictions), copies already exist
                cold = run_job(stack.gateway_url, ["dog", "cat", "bird", "food"])
                warm = run_job(stack.gateway_url, ["dog", "cat", "bird", "food"])
                log = Path(stack.functions["classify_image"].log_path)
                cold["stage_ms_median"] = stage_times(log, cold["id"])
                warm["stage_ms_median"] = stage_times(log, warm["id"])
            finally:
                stack.stop()
            trials.append({"functions_start_seconds": round(startup, 2), "cold": cold, "warm": warm})
            print(f"trial {trial + 1}: cold {cold['images_per_second']} img/s, warm {warm['images_per_second']} "
                  "img/s", file=sys.stderr)
    summary = {kind: round(statistics.median(t[kind]["images_per_second"] for t in trials), 1)
               for kind in ("cold", "warm")}
    from bench.machine import describe

    print(json.dumps({
        "machine": describe(),
        "what": "309 photos, POST to complete, on the emulators (fake-gcs-server, Firestore, Pub/Sub push to "
                "classify_image under functions-framework), one classify_image instance",
        "model": args.model, "weights": args.weights.name, "threads": args.threads, "cpus": os.cpu_count(),
        "trials": trials, "images_per_second_median": summary,
    }, indent=2))


if __name__ == "__main__":
    main()
