"""Classify-path throughput, latency, cold start and peak memory: the seed's way against ours, in one run.

Every variant runs in its own fresh process (so cold start and peak RSS are its own) on the same real photos held
in memory (storage excluded): bytes in -> decode -> model -> class matches out.

  seed            Pillow decode + resize, keras preprocess_input, model.predict() per image (the old service)
  keras_fn_b1     our Keras runtime: draft decode, one traced tf.function, batch 1
  keras_fn_b8     the same, batches of 8 (what batching concurrent deliveries buys)
  litert_fp32     LiteRT, fp32 artifact, one interpreter x 2 threads
  litert_int8     LiteRT, full-int8 artifact, one interpreter x 2 threads
  litert_int8_2w  LiteRT, full-int8, two interpreters x 1 thread serving two deliveries at once
  model_only_2w   the ceiling: the same two interpreters invoked on inputs decoded and quantized beforehand (no
                  decode, no preprocessing, no matching) — what the CPU allows for the model alone

  .venv/bin/python bench/classify.py --photos ../shared/photos/imagenet-dev --images 200 > bench/results/classify.json

ResNet50 with weights=None has the real cost (answers are meaningless, which does not matter for speed).
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
VARIANTS = ("seed", "keras_fn_b1", "keras_fn_b8", "litert_fp32", "litert_int8", "litert_int8_2w", "model_only_2w")
QUERIES = ("dog", "cat", "truck", "food")


def load_photos(folder: Path, count: int) -> list[bytes]:
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    return [p.read_bytes() for p in (paths * (count // len(paths) + 1))[:count]]


# --- child: one variant in a fresh process -----------------------------------------------------------------------

def run_child(variant: str, model: str, photos: list[bytes], artifacts: dict[str, str], started: float) -> dict:
    import numpy as np

    timings: list[float] = []
    if variant == "seed":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import keras
        from PIL import Image

        from common.domain.jobs import JobSpec
        from common.domain.matching import match_classes

        build = {"resnet50": keras.applications.ResNet50, "mobilenet_v2": keras.applications.MobileNetV2}[model]
        preprocess_input = {"resnet50": keras.applications.resnet50.preprocess_input,
                            "mobilenet_v2": keras.applications.mobilenet_v2.preprocess_input}[model]
        net = build(weights=None)
        spec = JobSpec(QUERIES, "bench", match="substring", min_score=0.0)

        def one(data: bytes) -> object:
            image = Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224))
            x = preprocess_input(np.asarray(image, dtype=np.float32)[None])
            return match_classes(spec, net.predict(x, verbose=0)[0]).matched

        classify_batch = None
    else:
        from common.inference.decoding import decode_image
        from common.domain.jobs import JobSpec
        from common.domain.matching import match_classes
        from common.inference.keras import KerasClassifier
        from common.inference.litert import LiteRTClassifier

        spec = JobSpec(QUERIES, "bench")
        if variant.startswith("keras"):
            classifiers = [KerasClassifier(model, "none")]
        elif variant == "litert_fp32":
            classifiers = [LiteRTClassifier(model, artifacts["fp32"], threads=2, interpreters=1)]
        elif variant == "litert_int8":
            classifiers = [LiteRTClassifier(model, artifacts["int8"], threads=2, interpreters=1)]
        else:
            classifiers = [LiteRTClassifier(model, artifacts["int8"], threads=1, interpreters=2)] * 2

        def one(data: bytes, classifier: object = classifiers[0]) -> object:
            probabilities = classifier.predict(decode_image(data)[None])[0]  # type: ignore[attr-defined]
            return match_classes(spec, probabilities).matched

        if variant == "model_only_2w":
            from ai_edge_litert.interpreter import Interpreter

            from common.inference.classifier import preprocess

            quantize = classifiers[0]._quantize  # noqa: SLF001 - the runtime's own input quantization
            prepared = {id(d): quantize(preprocess(model, decode_image(d)[None])) for d in photos}
            interpreters = []
            for _ in range(2):
                interpreter = Interpreter(model_path=artifacts["int8"], num_threads=1)
                interpreter.allocate_tensors()
                interpreters.append(interpreter)
            classifiers = [0, 1]  # the two workers' interpreter slots

            def one(data: bytes, classifier: object = 0) -> object:  # noqa: F811
                interpreter = interpreters[classifier]  # type: ignore[index]
                interpreter.set_tensor(interpreter.get_input_details()[0]["index"], prepared[id(data)])
                interpreter.invoke()
                return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

        def classify_batch(batch: list[bytes]) -> object:
            pixels = np.stack([decode_image(d) for d in batch])
            return [match_classes(spec, p).matched for p in classifiers[0].predict(pixels)]  # type: ignore[attr-defined]

    one(photos[0])
    cold_start = time.time() - started
    for data in photos[1:4]:  # warm-up
        one(data)
    work = photos[4:]
    begin = time.perf_counter()
    if variant == "keras_fn_b8":
        for i in range(0, len(work), 8):
            t = time.perf_counter()
            classify_batch(work[i:i + 8])  # type: ignore[misc]
            timings.append((time.perf_counter() - t))
    elif variant in ("litert_int8_2w", "model_only_2w"):
        lock = threading.Lock()
        queue = list(enumerate(work))

        def worker(classifier: object) -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    _, data = queue.pop()
                t = time.perf_counter()
                one(data, classifier)
                with lock:
                    timings.append(time.perf_counter() - t)

        threads = [threading.Thread(target=worker, args=(c,)) for c in classifiers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        for data in work:
            t = time.perf_counter()
            one(data)
            timings.append(time.perf_counter() - t)
    elapsed = time.perf_counter() - begin
    ms = sorted(t * 1000 for t in timings)
    return {
        "variant": variant, "model": model, "images": len(work),
        "images_per_second": round(len(work) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 2), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 2),
        "latency_unit": "batch of 8" if variant == "keras_fn_b8" else "image",
        "cold_start_s": round(cold_start, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "imports_tensorflow": "tensorflow" in sys.modules,
    }


# --- parent -----------------------------------------------------------------------------------------------------

def build_artifacts(model: str, photos_dir: Path, out: Path) -> dict[str, str]:
    from imgclassify.litert_build import artifact_path, weights_key

    key = weights_key(model, "none")
    paths = {kind: artifact_path(out, key, kind) for kind in ("fp32", "int8")}
    if not all(p.exists() for p in paths.values()):
        subprocess.run([sys.executable, str(REPO / "tools/build_tflite.py"), "--model", model, "--weights", "none",
                        "--calibration", str(photos_dir), "--guard", str(REPO.parent / "shared/photos/coral"),
                        "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
    return {kind: str(p) for kind, p in paths.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/photos/imagenet-dev")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--model", default="resnet50", choices=["resnet50", "mobilenet_v2"])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--artifacts", type=Path, default=REPO / "build/bench-models")
    parser.add_argument("--trials", type=int, default=1,
                        help="run every variant this many times, interleaved; report medians (this VM is noisy)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--artifact-paths", help=argparse.SUPPRESS)
    args = parser.parse_args()
    photos = load_photos(args.photos, args.images)

    if args.child:
        from common.logs import send_logs_to_stderr

        send_logs_to_stderr()
        print(json.dumps(run_child(args.child, args.model, photos, json.loads(args.artifact_paths), args.started)))
        return

    artifacts = build_artifacts(args.model, args.photos, args.artifacts)
    trials: dict[str, list[dict]] = {variant: [] for variant in args.variants}
    for trial in range(args.trials):
        for variant in args.variants:
            started = time.time()
            child = subprocess.run([sys.executable, __file__, "--child", variant, "--model", args.model, "--photos",
                                    str(args.photos), "--images", str(args.images), "--started", str(started),
                                    "--artifact-paths", json.dumps(artifacts)], capture_output=True, text=True,
                                   check=True, env={**os.environ, "PYTHONHASHSEED": "0"})
            trials[variant].append(json.loads(child.stdout.strip().splitlines()[-1]))
            print(f"trial {trial + 1} {variant}: {trials[variant][-1]['images_per_second']} img/s", file=sys.stderr)
    results = []
    for runs in trials.values():
        summary = dict(runs[0])
        for key in ("images_per_second", "p50_ms", "p95_ms", "cold_start_s"):
            summary[key] = round(statistics.median(run[key] for run in runs), 3)
        summary["peak_rss_mb"] = max(run["peak_rss_mb"] for run in runs)
        summary["images_per_second_trials"] = [run["images_per_second"] for run in runs]
        results.append(summary)
    seed = next((r for r in results if r["variant"] == "seed"), None)
    for result in results:
        if seed:
            result["speedup_vs_seed"] = round(result["images_per_second"] / seed["images_per_second"], 2)
            result["speedup_vs_seed_per_trial"] = [
                round(mine / theirs, 2) for mine, theirs in
                zip(result["images_per_second_trials"], seed["images_per_second_trials"])]
    from bench.machine import describe

    print(json.dumps({"model": args.model, "weights": "none (random: real cost)", "photos": str(args.photos),
                      "machine": describe(), "cpus": os.cpu_count(), "trials": args.trials, "statistic": "median over trials",
                      "results": results}, indent=2))


if __name__ == "__main__":
    main()
