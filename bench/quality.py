"""Classification quality: the old substring rule against the hierarchy matcher, on photos named <wnid>_*.<ext>.

Ground truth per query comes from the WordNet hierarchy: a photo is a "dog" when its wnid descends from the
synset "dog" resolves to. Prints JSON: per-query precision/recall/F1 for both rules, their macro F1, and a
min_score sweep for the hierarchy matcher.

  .venv/bin/python bench/quality.py ../shared/photos/imagenet-dev \
      --weights ../shared/models/mobilenet_v2/mobilenet_v2_imagenet.weights.h5 --model mobilenet_v2
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common.inference.decoding import decode_image  # noqa: E402
from common.domain.jobs import HIERARCHY_MIN_SCORE, JobSpec  # noqa: E402
from common.domain.labels import imagenet_classes  # noqa: E402
from common.logs import send_logs_to_stderr  # noqa: E402
from common.domain.matching import hierarchy_scores, match_classes  # noqa: E402
from common.inference.classifier import ModelConfig  # noqa: E402
from common.inference.loader import load_classifier  # noqa: E402
from common.domain.taxonomy import resolve  # noqa: E402

QUERIES = ["dog", "cat", "bird", "fish", "snake", "monkey", "truck", "car", "vehicle", "boat", "aircraft", "fruit",
           "food", "furniture", "building", "musical instrument",
           "dogs", "cats", "birds", "fishes", "snakes", "monkeys", "trucks", "cars", "vehicles", "boats", "fruits",
           "foods", "buildings", "musical instruments"]
EXTENSIONS = {".jpeg", ".jpg", ".png", ".bmp", ".webp"}


def prf(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float | int]:
    tp = int(np.sum(predicted & truth))
    fp = int(np.sum(predicted & ~truth))
    fn = int(np.sum(~predicted & truth))
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4),
            "tp": tp, "fp": fp, "fn": fn}


def load_photos(folder: Path) -> tuple[list[Path], np.ndarray]:
    index_of = {c.wnid: c.index for c in imagenet_classes()}
    paths, labels = [], []
    for path in sorted(folder.iterdir()):
        wnid = path.name.split("_", 1)[0]
        if path.suffix.lower() in EXTENSIONS and wnid in index_of:
            paths.append(path)
            labels.append(index_of[wnid])
    return paths, np.array(labels)


def classify(paths: list[Path], config: ModelConfig, batch: int = 32) -> np.ndarray:
    classifier = load_classifier(config)
    rows = []
    for start in range(0, len(paths), batch):
        pixels = np.stack([decode_image(p.read_bytes()) for p in paths[start:start + batch]])
        rows.append(classifier.predict(pixels))
    return np.concatenate(rows)


def evaluate(probabilities: np.ndarray, labels: np.ndarray, queries: list[str], min_score: float) -> dict:
    per_query = {}
    substring_spec = JobSpec(tuple(queries), "bench", match="substring", min_score=0.0)
    substring_hits = [set(match_classes(substring_spec, row).matched) for row in probabilities]
    scores = [hierarchy_scores(queries, row) for row in probabilities]
    for query in queries:
        resolution = resolve(query)
        truth = np.isin(labels, sorted(resolution.classes))
        old = np.array([query in hits for hits in substring_hits])
        new = np.array([s[query] >= min_score and s[query] > 0 for s in scores])
        per_query[query] = {"resolved": list(resolution.synsets), "positives": int(truth.sum()),
                            "substring": prf(old, truth), "hierarchy": prf(new, truth)}
    macro = {rule: round(float(np.mean([q[rule]["f1"] for q in per_query.values()])), 4)
             for rule in ("substring", "hierarchy")}
    return {"queries": per_query, "macro_f1": macro}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--queries", nargs="+", default=QUERIES)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--weights", required=True)
    parser.add_argument("--min-score", type=float, default=HIERARCHY_MIN_SCORE)
    args = parser.parse_args()
    send_logs_to_stderr()

    paths, labels = load_photos(args.folder)
    started = time.perf_counter()
    probabilities = classify(paths, ModelConfig(args.model, args.weights))
    elapsed = time.perf_counter() - started
    result = {"folder": str(args.folder), "images": len(paths), "model": args.model,
              "weights": Path(args.weights).name, "classify_seconds": round(elapsed, 2),
              "top1_accuracy": round(float(np.mean(probabilities.argmax(axis=1) == labels)), 4),
              "min_score": args.min_score, **evaluate(probabilities, labels, args.queries, args.min_score)}
    result["sweep"] = {f"{t:.2f}": evaluate(probabilities, labels, args.queries, t)["macro_f1"]["hierarchy"]
                       for t in np.arange(0.05, 0.96, 0.05)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
