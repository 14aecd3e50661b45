"""How good can classes taught by examples be with this model's features? The chosen rule against its ceiling.

The dev photos' penultimate features are computed once with the given build (what the service stores). Then, for
each seed, `--shots` examples per flower class are drawn; the class's other photos and the distractors are the job.
Reported per rule (medians over the seeds):
  - `calibrated`: macro one-vs-all F1 of the rule as it ships (common/domain/examples.py: thresholds from the
    examples alone);
  - `ceiling`: the same similarities with each class's threshold chosen *on the job's own photos and their true
    classes* — no rule that decides by these similarities can do better on this draw;
  - `five_way`: the accuracy of the nearest class among the flower photos alone (what any threshold is capped by).
Rules: the shipped prototype rule, k-nearest examples (k = 3), and softmax over a least-squares probe. Prints JSON.

  .venv/bin/python bench/examples_quality.py --weights build/bench-models/mobilenet_v2-…-b2-int8-mixed.tflite
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import describe, emit  # noqa: E402

Scorer = Callable[[dict[str, np.ndarray], np.ndarray, np.ndarray], np.ndarray]


def dev_features(weights: Path, model: str, folders: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """(features, true class per photo: the flower folder's name, '' for a distractor)."""
    from common.domain.options import Model, Runtime
    from common.inference.classifier import ModelConfig
    from common.inference.decoding import decode_image
    from common.inference.loader import load_classifier

    runtime = Runtime.LITERT if weights.suffix == ".tflite" else Runtime.KERAS
    classifier = load_classifier(ModelConfig(Model(model), str(weights), runtime))
    photos: list[tuple[Path, str]] = []
    for flowers in folders[:-1]:
        photos += [(p, d.name) for d in sorted(flowers.iterdir()) if d.is_dir() for p in sorted(d.iterdir())]
    photos += [(p, "") for p in sorted(folders[-1].iterdir())]
    rows = []
    for start in range(0, len(photos), 32):
        pixels = np.stack([decode_image(p.read_bytes()) for p, _ in photos[start:start + 32]])
        features = classifier.predict_with_features(pixels)[1]
        if features is None:
            raise SystemExit(f"{weights.name} has no features output: build it with imgclassify (…-b2-…)")
        rows.append(features)
    return np.concatenate(rows).astype(np.float32), np.array([label for _, label in photos])


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-8)


def _centred(examples: dict[str, np.ndarray], background: np.ndarray) -> np.ndarray:
    return np.concatenate([*examples.values(), background]).mean(axis=0)


def prototype_scores(examples: dict[str, np.ndarray], background: np.ndarray, photos: np.ndarray) -> np.ndarray:
    from common.domain import examples as rule

    model = rule.learn(examples, background)
    return _unit(photos - model.centre) @ model.prototypes.T


def nearest_examples_scores(examples: dict[str, np.ndarray], background: np.ndarray,
                            photos: np.ndarray, k: int = 3) -> np.ndarray:
    centre = _centred(examples, background)
    units = _unit(photos - centre)
    return np.stack([np.sort(units @ _unit(rows - centre).T, axis=1)[:, -k:].mean(axis=1)
                     for rows in examples.values()], axis=1)


def probe_scores(examples: dict[str, np.ndarray], background: np.ndarray, photos: np.ndarray) -> np.ndarray:
    """A ridge-regularised least-squares probe onto one-hot targets, the job's sampled photos as a none-class."""
    centre = _centred(examples, background)
    x = np.concatenate([*(_unit(rows - centre) for rows in examples.values()), _unit(background - centre)])
    classes = len(examples)
    y = np.zeros((len(x), classes + 1), np.float32)
    row = 0
    for column, rows in enumerate(examples.values()):
        y[row:row + len(rows), column] = 1
        row += len(rows)
    y[row:, classes] = 1
    weights = np.linalg.solve(x.T @ x + 1.0 * np.eye(x.shape[1]), x.T @ y)
    logits = _unit(photos - centre) @ weights
    logits = np.exp(8 * (logits - logits.max(axis=1, keepdims=True)))
    return (logits / logits.sum(axis=1, keepdims=True))[:, :classes]


def _f1(chosen: np.ndarray, truth: np.ndarray) -> float:
    tp = int(np.sum(chosen & truth))
    return 2 * tp / (int(chosen.sum()) + int(truth.sum())) if chosen.any() or truth.any() else 1.0


def evaluate(features: np.ndarray, labels: np.ndarray, scorer: Scorer, shots: int, seeds: int,
             calibrated: bool) -> dict[str, float]:
    from common.domain import examples as rule

    classes = sorted(set(labels) - {""})
    found: dict[str, list[float]] = {"ceiling": [], "five_way": [], **({"calibrated": []} if calibrated else {})}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        chosen = {c: rng.permutation(np.flatnonzero(labels == c))[:shots] for c in classes}
        taken = np.concatenate(list(chosen.values()))
        job = np.setdiff1d(np.arange(len(labels)), taken)
        background = features[rng.choice(job, min(rule.BACKGROUND_SAMPLE, len(job)), replace=False)]
        examples = {c: features[i] for c, i in chosen.items()}
        scores = scorer(examples, background, features[job])
        nearest, truth = scores.argmax(axis=1), labels[job]
        flowers = truth != ""
        found["five_way"].append(float(np.mean(np.array(classes)[nearest[flowers]] == truth[flowers])))
        best = []
        for column, name in enumerate(classes):
            mine = nearest == column
            best.append(max(_f1(mine & (scores[:, column] >= t), truth == name)
                            for t in np.unique(scores[mine, column])) if mine.any() else 0.0)
        found["ceiling"].append(float(np.mean(best)))
        if calibrated:
            model = rule.learn(examples, background)
            decided = np.array([(model.matches(row) or ("",))[0] for row in features[job]])
            found["calibrated"].append(float(np.mean([_f1(decided == c, truth == c) for c in classes])))
    return {k: round(statistics.median(v), 3) for k, v in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flowers", type=Path, default=REPO.parent / "shared/photos/flowers-dev")
    parser.add_argument("--distractors", type=Path, default=REPO.parent / "shared/photos/imagenet-dev")
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--shots", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    features, labels = dev_features(args.weights, args.model, [args.flowers, args.distractors])
    rules: dict[str, tuple[Scorer, bool]] = {"prototype (shipped)": (prototype_scores, True),
                                             "3 nearest examples": (nearest_examples_scores, False),
                                             "least-squares probe": (probe_scores, False)}
    emit({"benchmark": "examples_quality", "machine": describe(), "model": args.model, "weights": args.weights.name,
          "shots": args.shots, "seeds": args.seeds, "photos": len(labels),
          "rules": {name: evaluate(features, labels, scorer, args.shots, args.seeds, calibrated)
                    for name, (scorer, calibrated) in rules.items()}}, args.out)


if __name__ == "__main__":
    main()
