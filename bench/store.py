"""What the prediction store buys: a second job with other classes over the same photos, against the first, process
start included — `imgclassify run` as a user runs it (embedded), and POST to complete on the emulated pipeline.

  .venv/bin/python bench/store.py --trials 3 > bench/results/store.json

Embedded: each trial copies the photos to a fresh folder (an empty store), times `run --classes dog bird` (the first
job: every photo through the model) and then `run --classes truck fish fruit` (the second: every prediction from
the store), each a new process. Pipeline: fresh functions and bucket per trial, then the same two jobs.
Run it alone: nothing else on the CPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
IMGCLASSIFY = str(Path(sys.executable).with_name("imgclassify"))
FIRST, SECOND = ["dog", "bird"], ["truck", "fish", "fruit"]


def timed_run(root: Path, classes: list[str], model_args: list[str]) -> tuple[float, dict]:
    started = time.perf_counter()
    result = subprocess.run([IMGCLASSIFY, "run", str(root), "--classes", *classes, *model_args, "--json"],
                            capture_output=True, text=True, check=True)
    return time.perf_counter() - started, json.loads(result.stdout)


def embedded(photos: Path, model_args: list[str], trials: int) -> dict:
    runs = []
    for _ in range(trials):
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            shutil.copytree(photos, root / "all")
            first_s, first = timed_run(root, FIRST, model_args)
            second_s, second = timed_run(root, SECOND, model_args)
        runs.append({"first_s": round(first_s, 2), "second_s": round(second_s, 2),
                     "first_from_store": first["from_store"], "second_from_store": second["from_store"],
                     "images": second["number_of_files"], "speedup": round(first_s / second_s, 1)})
        print(f"embedded {model_args[-1]}: {runs[-1]}", file=sys.stderr)
    return {"runs": runs, "speedup_median": statistics.median(r["speedup"] for r in runs),
            "first_s_median": statistics.median(r["first_s"] for r in runs),
            "second_s_median": statistics.median(r["second_s"] for r in runs)}


def pipeline(photos: Path, weights: Path, model: str, trials: int) -> dict:
    from bench.pipeline import run_job
    from common.adapters.gcp import GcsObjectStore, storage_client
    from imgclassify.emulation import Emulators
    from imgclassify.local_stack import LocalStack

    files = sorted(p for p in photos.iterdir() if p.is_file())
    runs = []
    with Emulators() as emulators:
        os.environ.update(emulators.env)
        store = GcsObjectStore(storage_client(emulators.project))
        for trial in range(trials):
            stack = LocalStack(emulators, bucket=f"store-{trial}", topic=f"store-{trial}",
                               subscription=f"store-{trial}-push",
                               function_env={"MODEL": model, "MODEL_WEIGHTS": str(weights.resolve()), "THREADS": "8",
                                             "PREDICTIONS_COLLECTION": f"predictions-{trial}"})
            stack.start()
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda p, bucket=stack.bucket: store.write(bucket, f"all/{p.name}", p.read_bytes()),
                              files))
            try:
                first, second = run_job(stack.gateway_url, FIRST), run_job(stack.gateway_url, SECOND)
            finally:
                stack.stop()
            runs.append({"first_s": first["seconds"], "second_s": second["seconds"], "images": second["images"],
                         "speedup": round(first["seconds"] / second["seconds"], 1)})
            print(f"pipeline: {runs[-1]}", file=sys.stderr)
    return {"runs": runs, "speedup_median": statistics.median(r["speedup"] for r in runs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/photos/imagenet-dev")
    parser.add_argument("--h5", type=Path,
                        default=REPO.parent / "shared/models/mobilenet_v2/mobilenet_v2_imagenet.weights.h5")
    parser.add_argument("--pipeline-weights", type=Path, default=REPO / "build/bench-models/resnet50-none-b2-int8.tflite")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--default-model", default="mobilenet_v2")
    parser.add_argument("--default-weights", type=Path, help="weights for the default-runtime runs (default: --h5)")
    parser.add_argument("--parts", nargs="+", default=["keras", "default", "pipeline"],
                        choices=["keras", "default", "pipeline"])
    args = parser.parse_args()
    from bench.machine import describe
    from common.logs import send_logs_to_stderr

    send_logs_to_stderr()
    keras = ["--model", "mobilenet_v2", "--weights", str(args.h5), "--runtime", "keras"]
    # default runtime: the guarded LiteRT build of these weights
    default = ["--model", args.default_model, "--weights", str(args.default_weights or args.h5)]
    results: dict[str, object] = {"machine": describe(), "photos": str(args.photos)}
    if "keras" in args.parts:
        results["embedded_keras"] = embedded(args.photos, keras, args.trials)
    if "default" in args.parts:
        warmup = tempfile.mkdtemp()
        shutil.copytree(args.photos, Path(warmup) / "all")
        timed_run(Path(warmup), FIRST, default)  # compile the LiteRT build once, outside the timings
        shutil.rmtree(warmup)
        results[f"embedded_default_runtime_{args.default_model}"] = embedded(args.photos, default, args.trials)
    if "pipeline" in args.parts:
        results["pipeline_resnet50_int8"] = pipeline(args.photos, args.pipeline_weights, "resnet50", args.trials)
    print(json.dumps({
        **results,
        "note": "first job: every photo through the model; second job, other classes: every prediction from the "
                "store. Process start included (embedded); POST to complete (pipeline).",
    }, indent=2))


if __name__ == "__main__":
    main()
