"""Classes taught by example photos, end to end on the embedded service: quality and what stored features save.

A folder is built (in a temporary directory; nothing of ../shared is kept): for each flower class, `--shots`
example photos in examples/<class>/ and the class's other photos in all/, with the ImageNet dev photos in all/
as distractors. One job asks for the five flower classes with their examples; macro F1 over the classes is
computed from the job's own results (a photo is a `<class>` when it came from that class's folder). Then the
same question is asked again (another threshold, so another job) over the now-known photos: no model runs.
Several seeds choose the examples; medians. Then corrections: `tulips` (no ImageNet class) asked over a folder of all
the photos, 5 of its photos corrected as tulips, asked again; F1 on the photos nobody corrected. Prints JSON.

  .venv/bin/python bench/examples.py --flowers ../shared/photos/flowers-dev --distractors \
      ../shared/photos/imagenet-dev --weights build/mobilenet_v2-int8.tflite --model mobilenet_v2 --seeds 3
"""
from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import describe, emit  # noqa: E402


def build_folder(root: Path, flowers: Path, distractors: Path, shots: int, seed: int) -> dict[str, str]:
    """The folder; returns each photo's true class ('' for a distractor) by its name under all/."""
    rng = random.Random(seed)
    truth: dict[str, str] = {}
    (root / "all").mkdir(parents=True)
    for folder in sorted(p for p in flowers.iterdir() if p.is_dir()):
        photos = sorted(folder.iterdir())
        rng.shuffle(photos)
        (root / "examples" / folder.name).mkdir(parents=True)
        for photo in photos[:shots]:
            shutil.copy(photo, root / "examples" / folder.name / photo.name)
        for photo in photos[shots:]:
            name = f"{folder.name}-{photo.name}"
            shutil.copy(photo, root / "all" / name)
            truth[f"all/{name}"] = folder.name
    for photo in sorted(distractors.iterdir()):
        shutil.copy(photo, root / "all" / photo.name)
        truth[f"all/{photo.name}"] = ""
    return truth


def macro_f1(results: dict[str, tuple[str, ...]], truth: dict[str, str], classes: list[str]) -> dict[str, float]:
    scores = {}
    for name in classes:
        tp = sum(1 for photo, matched in results.items() if name in matched and truth[photo] == name)
        fp = sum(1 for photo, matched in results.items() if name in matched and truth[photo] != name)
        fn = sum(1 for photo, matched in results.items() if name not in matched and truth[photo] == name)
        scores[name] = round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else 1.0
    scores["macro"] = round(statistics.fmean(scores[c] for c in classes), 4)
    return scores


def trial(args: argparse.Namespace, seed: int) -> dict[str, object]:
    from common import bootstrap
    from common.config import Settings
    from common.domain.options import Backend, Model, Runtime

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "dir"
        truth = build_folder(root, args.flowers, args.distractors, args.shots, seed)
        classes = sorted(p.name for p in args.flowers.iterdir() if p.is_dir())
        runtime = Runtime.LITERT if str(args.weights).endswith(".tflite") else Runtime.KERAS
        app = bootstrap.local_app(Settings(backend=Backend.LOCAL, local_root=str(root), bucket="local",
                                           model=Model(args.model), weights=str(args.weights), runtime=runtime),
                                  workers=2)
        body = {"classes": classes, "examples": {c: f"examples/{c}/" for c in classes}, "dry_run": True}
        app.load_model()  # loading the model is not what is measured
        timings, views = [], []
        for min_score in (0.35, 0.5):
            started = time.perf_counter()
            job = app.create_job({**body, "min_score": min_score})
            assert app.wait(timeout=3600)
            timings.append(time.perf_counter() - started)
            views.append(app.job_status(job.id))
        results = {r.name: r.matched for r in app.ports.jobs.results(views[0].id)}
        app.stop()
    return {"seed": seed, "photos": len(truth), "f1": macro_f1(results, truth, classes),
            "first_seconds": round(timings[0], 3), "second_seconds": round(timings[1], 3),
            "second_from_store": views[1].counters.from_store, "speedup": round(timings[0] / timings[1], 1)}


def corrections_trial(args: argparse.Namespace, seed: int, word: str = "tulips", shown: int = 5) -> dict[str, object]:
    """A class ImageNet lacks (tulips: a WordNet noun with no ImageNet class under it) asked over the folder (F1 0),
    then `shown` of its photos corrected as belonging to it over HTTP's use case, then asked again: F1 on the
    photos nobody corrected."""
    from common import bootstrap
    from common.config import Settings
    from common.domain.options import Backend, Model, Runtime

    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "dir"
        truth = build_folder(root, args.flowers, args.distractors, 0, seed)
        runtime = Runtime.LITERT if str(args.weights).endswith(".tflite") else Runtime.KERAS
        app = bootstrap.local_app(Settings(backend=Backend.LOCAL, local_root=str(root), bucket="local",
                                           model=Model(args.model), weights=str(args.weights), runtime=runtime),
                                  workers=2)
        jobs = app.ports.jobs

        def ask() -> dict[str, tuple[str, ...]]:
            job = app.create_job({"classes": [word], "dry_run": True})
            assert app.wait(timeout=3600)
            return {r.name: r.matched for r in jobs.results(job.id)}, job.id

        before, job_id = ask()
        rng = random.Random(seed)
        corrected = rng.sample(sorted(n for n, c in truth.items() if c == word), shown)
        app.correct_job(job_id, {"corrections": [{"name": n, "class": word, "belongs": True} for n in corrected]})
        after, _ = ask()
        app.stop()
    remaining = {n: c for n, c in truth.items() if n not in corrected}
    return {"seed": seed, "shown": shown, "f1_before": macro_f1(before, truth, [word])[word],
            "f1_after_on_the_rest": macro_f1({n: m for n, m in after.items() if n in remaining}, remaining,
                                             [word])[word]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flowers", type=Path, default=REPO.parent / "shared/photos/flowers-dev")
    parser.add_argument("--distractors", type=Path, default=REPO.parent / "shared/photos/imagenet-dev")
    parser.add_argument("--weights", type=Path, required=True, help="a .tflite build with a features output")
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    import logging

    from common.logs import get_logger, send_logs_to_stderr

    get_logger("bench")
    send_logs_to_stderr()
    logging.getLogger("imgclassify").setLevel(logging.WARNING)
    trials = [trial(args, seed) for seed in range(args.seeds)]
    corrections = [corrections_trial(args, seed) for seed in range(args.seeds)]
    emit({"benchmark": "examples", "machine": describe(), "model": args.model, "weights": args.weights.name,
          "shots": args.shots, "trials": trials, "corrections": corrections,
          "medians": {"macro_f1": statistics.median(t["f1"]["macro"] for t in trials),  # type: ignore[index]
                      "first_seconds": statistics.median(t["first_seconds"] for t in trials),
                      "second_seconds": statistics.median(t["second_seconds"] for t in trials),
                      "speedup": statistics.median(t["speedup"] for t in trials),
                      "corrections_f1_after": statistics.median(c["f1_after_on_the_rest"] for c in corrections)}},
         args.out)


if __name__ == "__main__":
    main()
