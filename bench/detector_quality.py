"""People, measured honestly (issue 33): every rule for "a visible person" scored by repeated stratified k-fold
cross-validation on the 535 hand-labelled dev photos (bench/data/person_labels.csv), each rule's thresholds chosen
on the training folds only and scored on the held-out fold. Prints JSON.

Rules compared:
  detector      the detector's person score alone, its threshold chosen by CV
  groups        the same, with a lower threshold when the classifier's leading class is worn, played, handled or
                ridden (WordNet groups, common/domain/people.py); both thresholds chosen by CV
  logistic      a logistic model over the detector's score (logit) and the classifier's mass in each group
  logistic+coco the same plus the detector's best score among COCO classes in those groups (tie, skis, bicycle...)
and, for the cascade (common/inference/detector.py), the chosen rule on the cascade's scores (256 first, 416 where
the 256 pass is unsure) against the single 416 pass: recall must not drop.

Threshold choice on the training folds: precision first (the best F1 among thresholds with precision >= 0.9 on the
training folds, else the most precise). Figures: the pooled held-out predictions of each repetition (precision,
recall, F1), mean and standard deviation over repetitions, and the per-fold F1's spread.

  .venv/bin/python bench/detector_quality.py [--photos /work/shared/photos] [--cache /tmp/detector-quality.npz]
      [--repeats 20 --folds 5] [--out bench/results/detector-quality.json]
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.machine import describe, emit  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
LABELS = REPO / "bench/data/person_labels.csv"
MOBILENET = REPO.parent / "shared/models/mobilenet_v2/tf2_mobilenet_v2_1.0_224_ptq.tflite"
GRID = np.round(np.arange(0.20, 0.91, 0.01), 2)
PRECISION_FIRST = 0.9
ISSUE_GROUPS = ("wearing", "playing", "handling", "riding")  # what the issue named; candidates add to them


def read_labels(path: Path = LABELS) -> list[dict[str, str]]:
    return list(csv.DictReader(line for line in path.open() if not line.startswith("#")))


def features(photos: Path, names: list[str], cache: Path | None) -> dict[str, np.ndarray]:
    """Per photo: MobileNetV2's probabilities (the int8 LiteRT build), the detector's answer at 416, and the
    cascade's answer with how many passes it took. Cached (the models take minutes over 535 photos)."""
    if cache is not None and cache.exists():
        kept = dict(np.load(cache))
        if list(kept["names"]) == names:
            return kept
    from common.domain.options import Model
    from common.inference.decoding import decode_image
    from common.inference.detector import LiteRTDetector
    from common.inference.litert import LiteRTClassifier
    from imgclassify.detector_build import FULL_SIZE, ensure_detector

    classifier = LiteRTClassifier(Model("mobilenet_v2"), str(MOBILENET), threads=1, interpreters=1)
    full = LiteRTDetector(str(ensure_detector(sizes=(FULL_SIZE,))), threads=1, interpreters=1)
    cascade = LiteRTDetector(str(ensure_detector()), threads=1, interpreters=1)
    rows: dict[str, list[Any]] = {"probabilities": [], "full": [], "cascade": [], "passes": []}
    for name in names:
        data = (photos / name).read_bytes()
        rows["probabilities"].append(classifier.predict(decode_image(data)[None])[0])
        pixels = decode_image(data, 416)
        rows["full"].append(full.detect(pixels))
        escalated = cascade.passes[FULL_SIZE]
        rows["cascade"].append(cascade.detect(pixels))
        rows["passes"].append(1 + cascade.passes[FULL_SIZE] - escalated)
    kept = {key: np.array(value) for key, value in rows.items()} | {"names": np.array(names)}
    if cache is not None:
        np.savez(cache, **kept)
    return kept


def scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    tp = int((predicted & truth).sum())
    fp = int((predicted & ~truth).sum())
    fn = int((~predicted & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def pick(candidates: list[tuple[Any, np.ndarray]], truth: np.ndarray) -> Any:
    """Precision first: the best F1 among the parameters that reach PRECISION_FIRST, else the most precise."""
    rated = [(scores(predicted, truth), params) for params, predicted in candidates]
    good = [(s["f1"], s["recall"], i) for i, (s, _) in enumerate(rated) if s["precision"] >= PRECISION_FIRST]
    best = max(good)[2] if good else max(range(len(rated)), key=lambda i: (rated[i][0]["precision"],
                                                                           rated[i][0]["recall"]))
    return rated[best][1]


# --- the rules: each fit(train indices) -> predict(test indices) --------------------------------------------------

Rule = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def detector_rule(person: np.ndarray) -> Rule:
    def fit(train: np.ndarray, truth: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        t = pick([(t, person[train] >= t) for t in GRID], truth[train])
        return lambda test: person[test] >= t
    return fit


def groups_rule(person: np.ndarray, led: np.ndarray) -> Rule:
    """A default threshold, lowered by `drop` where the classifier's leading class is in a group (led)."""
    drops = np.round(np.arange(0.0, 0.36, 0.05), 2)

    def fit(train: np.ndarray, truth: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        t, d = pick([((t, d), person[train] >= np.where(led[train], t - d, t)) for t in GRID for d in drops],
                    truth[train])
        return lambda test: person[test] >= np.where(led[test], t - d, t)
    return fit


def chosen_groups_rule(person: np.ndarray, candidates: dict[str, np.ndarray], chosen: list[str]) -> Rule:
    """groups_rule with which groups lower the threshold chosen on the training folds too (nested): the issue's
    four, or those and the animals people keep (domestic_animal.n.01) or dogs (dog.n.01). Records each choice."""
    drops = np.round(np.arange(0.0, 0.36, 0.05), 2)

    def fit(train: np.ndarray, truth: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        name, t, d = pick([((name, t, d), person[train] >= np.where(led[train], t - d, t))
                           for name, led in candidates.items() for t in GRID for d in drops], truth[train])
        chosen.append(name)
        led = candidates[name]
        return lambda test: person[test] >= np.where(led[test], t - d, t)
    return fit


def logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, steps: int = 25) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method (x has a bias column; the bias is not shrunk)."""
    w = np.zeros(x.shape[1])
    shrink = np.full(x.shape[1], l2)
    shrink[0] = 0.0
    for _ in range(steps):
        p = 1 / (1 + np.exp(-x @ w))
        gradient = x.T @ (p - y) + shrink * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(shrink + 1e-9)
        w -= np.linalg.solve(hessian, gradient)
    return w


def logistic_rule(design: np.ndarray) -> Rule:
    def fit(train: np.ndarray, truth: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        mean, spread = design[train].mean(0), design[train].std(0) + 1e-9
        x = np.c_[np.ones(len(design)), (design - mean) / spread]
        w = logistic(x[train], truth[train].astype(float))
        p = 1 / (1 + np.exp(-x @ w))
        t = pick([(t, p[train] >= t) for t in GRID], truth[train])
        return lambda test: p[test] >= t
    return fit


def restricted(rule: Rule, keep: np.ndarray, truth: np.ndarray) -> Rule:
    """The rule cross-validated over the photos `keep` only (indices into them, mapped back to all photos)."""
    def fit(train: np.ndarray, _: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        predict = rule(keep[train], truth)
        return lambda test: predict(keep[test])
    return fit


def cross_validate(rule: Rule, truth: np.ndarray, folds: int, repeats: int) -> dict[str, Any]:
    """Repeated stratified k-fold: each photo predicted once per repetition by a rule fitted without it."""
    pooled, per_fold = [], []
    for seed in range(repeats):
        rng = np.random.default_rng(seed)
        fold = np.empty(len(truth), dtype=int)
        for value in (True, False):  # stratified: each class dealt round-robin over the folds
            members = rng.permutation(np.flatnonzero(truth == value))
            fold[members] = np.arange(len(members)) % folds
        predicted = np.zeros(len(truth), dtype=bool)
        for k in range(folds):
            test, train = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
            predicted[test] = rule(train, truth)(test)
            per_fold.append(scores(predicted[test], truth[test])["f1"])
        pooled.append(scores(predicted, truth))
    summary = {key: {"mean": round(float(np.mean([p[key] for p in pooled])), 3),
                     "sd": round(float(np.std([p[key] for p in pooled])), 3)} for key in ("precision", "recall", "f1")}
    return summary | {"fold_f1": {"mean": round(float(np.mean(per_fold)), 3), "sd": round(float(np.std(per_fold)), 3),
                                  "min": round(float(np.min(per_fold)), 3)}}


def design(kept: dict[str, np.ndarray], detections: str) -> dict[str, np.ndarray]:
    """What the rules read per photo: the person score, whether an evidence class leads, the group masses, and the
    detector's best score among COCO classes in the same WordNet groups."""
    from common.domain.detections import coco_names
    from common.domain.people import GROUPS, LEAD_MIN, group_masses, group_of_class, leading_evidence
    from common.domain.taxonomy import resolve

    probabilities, boxes = kept["probabilities"], kept[detections]
    masses = np.array([list(group_masses(p).values()) for p in probabilities])
    in_groups = sorted(frozenset().union(*(resolve(s).detector_classes for _, synsets, _ in GROUPS for s in synsets))
                       - {coco_names().index("person")})
    top, top_p = probabilities.argmax(axis=1), probabilities.max(axis=1)
    issue = np.isin(top, [i for i, group in group_of_class().items() if group in ISSUE_GROUPS])
    candidates = {"worn, played, handled, ridden": issue & (top_p >= LEAD_MIN)}
    for extra in ("domestic_animal.n.01", "dog.n.01"):
        kept_animals = np.isin(top, sorted(resolve(extra).classes))
        candidates[f"... and {extra}"] = (issue | kept_animals) & (top_p >= LEAD_MIN)
    return {"person": boxes[:, 0, 0], "masses": masses, "coco": boxes[:, in_groups, 0].max(axis=1),
            "led": np.array([leading_evidence(p) is not None for p in probabilities]), "candidates": candidates,
            "coco_names": np.array([coco_names()[i] for i in in_groups])}


def fitted_on_all(person: np.ndarray, led: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The chosen rule's parameters fitted on every labelled photo (what ships), by the same precision-first pick."""
    drops = np.round(np.arange(0.0, 0.36, 0.05), 2)
    t, d = pick([((t, d), person >= np.where(led, t - d, t)) for t in GRID for d in drops], truth)
    return {"detector_min": float(t), "lowered_by": float(d)}


def in_sample(person: np.ndarray, led: np.ndarray, truth: np.ndarray, detector_min: float,
              lowered_by: float) -> dict[str, float]:
    return scores(person >= np.where(led, detector_min - lowered_by, detector_min), truth)


def report(labels: list[dict[str, str]], kept: dict[str, np.ndarray], folds: int, repeats: int) -> dict[str, Any]:
    from common.domain.jobs import DETECTOR_MIN_SCORE
    from common.domain.people import LOWERED_BY

    truth = np.array([row["person"] == "1" for row in labels])
    edge = np.array([row["note"].startswith("EDGE") for row in labels])
    full, cascade = design(kept, "full"), design(kept, "cascade")
    x = np.c_[np.log(np.clip(full["person"], 1e-4, 1 - 1e-4) / np.clip(1 - full["person"], 1e-4, 1)), full["masses"]]
    rules: dict[str, Rule] = {"detector": detector_rule(full["person"]),
                              "groups": groups_rule(full["person"], full["led"]),
                              "groups: the issue's four only": groups_rule(
                                  full["person"], full["candidates"]["worn, played, handled, ridden"]),
                              "logistic": logistic_rule(x), "logistic+coco": logistic_rule(np.c_[x, full["coco"]]),
                              "cascade: detector": detector_rule(cascade["person"]),
                              "cascade: groups": groups_rule(cascade["person"], cascade["led"])}
    choices: dict[str, list[str]] = {"groups, nested choice": [], "cascade: groups, nested choice": []}
    rules["groups, nested choice"] = chosen_groups_rule(full["person"], full["candidates"],
                                                        choices["groups, nested choice"])
    rules["cascade: groups, nested choice"] = chosen_groups_rule(cascade["person"], cascade["candidates"],
                                                                 choices["cascade: groups, nested choice"])
    clear = np.flatnonzero(~edge)
    result: dict[str, Any] = {"photos": len(truth), "people": int(truth.sum()), "edge_cases": int(edge.sum()),
                              "folds": folds, "repeats": repeats, "cross_validated": {}, "without_edge_cases": {}}
    for name, rule in rules.items():
        result["cross_validated"][name] = cross_validate(rule, truth, folds, repeats)
        result["without_edge_cases"][name] = cross_validate(restricted(rule, clear, truth), truth[clear], folds,
                                                            repeats)
    result["nested_choices"] = {name: {c: made.count(c) for c in sorted(set(made))} for name, made in choices.items()}
    shipped = {"detector_min": DETECTOR_MIN_SCORE, "lowered_by": LOWERED_BY}
    result["shipped_rule"] = shipped | {"fitted_on_all": fitted_on_all(full["person"], full["led"], truth)}
    result["shipped_in_sample"] = {"single_416": in_sample(full["person"], full["led"], truth, **shipped),
                                   "cascade": in_sample(cascade["person"], cascade["led"], truth, **shipped),
                                   "detector_alone_416": scores(full["person"] >= DETECTOR_MIN_SCORE, truth)}
    result["cascade"] = {"escalated": round(float((kept["passes"] == 2).mean()), 3),
                         "person_decisions_differing": int(((full["person"] >= DETECTOR_MIN_SCORE) !=
                                                            (cascade["person"] >= DETECTOR_MIN_SCORE)).sum())}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/photos")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/detector-quality.npz"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    labels = read_labels()
    names = [row["path"] for row in labels]
    kept = features(args.photos, names, args.cache)
    emit({"benchmark": "detector_quality", "machine": describe(), "labels": str(LABELS.relative_to(REPO)),
          **report(labels, kept, args.folds, args.repeats)}, args.out)


if __name__ == "__main__":
    main()
