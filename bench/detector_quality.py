"""People, measured honestly (issue 33): every rule for "a visible person" scored by repeated stratified k-fold
cross-validation on the 535 hand-labelled dev photos (bench/data/person_labels.csv), each rule's thresholds chosen
on the training folds only and scored on the held-out fold. Prints JSON.

Rules compared:
  detector      the detector's person score alone, its threshold chosen by CV
  groups        the same, with a lower threshold when the classifier's leading class is worn, played, handled or
                ridden (WordNet groups, common/domain/people.py); both thresholds chosen by CV
  logistic      a logistic model over the detector's score (logit) and the classifier's mass in each group
  logistic+coco the same plus the detector's best score among COCO classes in those groups (tie, skis, bicycle...)
and, for the cascade (common/usecases/photo_vectors.py: detected), the rules on the cascade's scores (256 first,
on the classifier's pixels; 416 where the 256 score is near the threshold the classifier's evidence sets: common/domain/people.py,
escalate) against the single 416 pass: recall must not drop. Also the previous cascade's band (a person 0.15-0.8, an
animal 0.3-0.8 at 256, whatever the classifier said) and the band chosen on the training folds too (nested: the
least escalation whose training recall and precision are the single pass's or better).

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
    """Per photo: MobileNetV2's probabilities (the int8 LiteRT build), the detector's answer at 416 (the single
    build, decoded at 416) and at 256 (the cascade's small pass, on the classifier's 224 pixels scaled up). Any cascade's answer is one of
    the two per photo. Cached (the models take minutes over 535 photos)."""
    if cache is not None and cache.exists():
        kept = dict(np.load(cache))
        if list(kept["names"]) == names and "small_on_224" in kept:
            return kept
    from common.domain.options import Model
    from common.inference.decoding import decode_image
    from common.inference.detector import LiteRTDetector
    from common.inference.litert import LiteRTClassifier
    from imgclassify.detector_build import FULL_SIZE, ensure_detector

    classifier = LiteRTClassifier(Model("mobilenet_v2"), str(MOBILENET), threads=1, interpreters=1)
    full = LiteRTDetector(str(ensure_detector(sizes=(FULL_SIZE,))), threads=1, interpreters=1)
    cascade = LiteRTDetector(str(ensure_detector()), threads=1, interpreters=1)
    rows: dict[str, list[Any]] = {"probabilities": [], "full": [], "small": []}
    for name in names:
        data = (photos / name).read_bytes()
        rows["probabilities"].append(classifier.predict(decode_image(data)[None])[0])
        rows["full"].append(full.detect(decode_image(data, FULL_SIZE)))
        rows["small"].append(cascade.detect(decode_image(data)))  # what the classifier saw, scaled up to 256
    kept = {key: np.array(value) for key, value in rows.items()} | {"names": np.array(names), "small_on_224": np.array(1)}
    if cache is not None:
        np.savez(cache, **kept)
    return kept


def escalations(kept: dict[str, np.ndarray], person_threshold: np.ndarray, below: float, above: float) -> np.ndarray:
    """Where a cascade with this band for a person (an animal's: the shipped one) runs its full pass
    (common/domain/detections.py: unsure, for every photo at once)."""
    from common.domain.detections import UNSURE_BELOW, coco_names, decided_classes
    from common.domain.jobs import DETECTOR_MIN_SCORE

    decided = decided_classes()
    is_person = np.array([coco_names()[i] == "person" for i in decided])
    thresholds = np.where(is_person[None, :], person_threshold[:, None], DETECTOR_MIN_SCORE)
    margins = np.where(is_person, below, UNSURE_BELOW)[None, :]
    small = kept["small"][:, decided, 0]
    return ((small >= thresholds - margins) & (small < thresholds + above)).any(axis=1)


def previous_escalations(kept: dict[str, np.ndarray]) -> np.ndarray:
    """The previous cascade's: a person 0.15-0.8 or a decided animal 0.3-0.8 at 256, whatever the classifier said."""
    from common.domain.detections import coco_names, decided_classes

    decided = decided_classes()
    low = np.array([0.15 if coco_names()[i] == "person" else 0.3 for i in decided])
    small = kept["small"][:, decided, 0]
    return ((small >= low) & (small < 0.8)).any(axis=1)


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


def transferred_rule(fitted_on: np.ndarray, applied_to: np.ndarray, led: np.ndarray) -> Rule:
    """groups_rule's thresholds fitted on one pass's scores (the single 416 pass: how the shipped thresholds were
    fitted) and applied to another's (the cascade's: what runs)."""
    drops = np.round(np.arange(0.0, 0.36, 0.05), 2)

    def fit(train: np.ndarray, truth: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        t, d = pick([((t, d), fitted_on[train] >= np.where(led[train], t - d, t)) for t in GRID for d in drops],
                    truth[train])
        return lambda test: applied_to[test] >= np.where(led[test], t - d, t)
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


BELOWS = (0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
ABOVES = (0.0, 0.05, 0.1, 0.15, 0.2)


def banded_rule(kept: dict[str, np.ndarray], person_threshold: np.ndarray, led: np.ndarray,
                chosen: list[tuple[float, float]], escalated: list[float], refit: bool = True) -> Rule:
    """The cascade's band chosen on the training folds too: the least escalation whose training recall and
    precision (at the shipped thresholds) are the single 416 pass's or better; then the groups rule fitted on that
    cascade's scores (refit), or on the single pass's and applied to the cascade's. Records each choice and the
    held-out photos' escalation."""
    bands = [(b, a) for b in BELOWS for a in ABOVES]
    runs = {band: escalations(kept, person_threshold, *band) for band in bands}
    person = {band: np.where(runs[band], kept["full"][:, 0, 0], kept["small"][:, 0, 0]) for band in bands}
    single = kept["full"][:, 0, 0] >= person_threshold

    def fit(train: np.ndarray, truth: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        base = scores(single[train], truth[train])
        rated = {band: scores(person[band][train] >= person_threshold[train], truth[train]) for band in bands}
        good = [band for band, s in rated.items() if s["recall"] >= base["recall"] and s["precision"] >=
                base["precision"]]
        band = min(good, key=lambda b: (runs[b][train].mean(), -b[0], -b[1])) if good else max(bands)
        chosen.append(band)
        rule = groups_rule(person[band], led) if refit else transferred_rule(kept["full"][:, 0, 0], person[band], led)
        predict = rule(train, truth)

        def held_out(test: np.ndarray) -> np.ndarray:
            escalated.append(float(runs[band][test].mean()))
            return predict(test)
        return held_out
    return fit


def report(labels: list[dict[str, str]], kept: dict[str, np.ndarray], folds: int, repeats: int) -> dict[str, Any]:
    from common.domain.detections import UNSURE_ABOVE, UNSURE_BELOW, UNSURE_BELOW_PERSON
    from common.domain.jobs import DETECTOR_MIN_SCORE
    from common.domain.people import LOWERED_BY, call_person, escalate

    truth = np.array([row["person"] == "1" for row in labels])
    edge = np.array([row["note"].startswith("EDGE") for row in labels])
    person_threshold = np.array([call_person(p, 0.0, DETECTOR_MIN_SCORE).threshold for p in kept["probabilities"]])
    escalated = np.array([escalate(small, p) for small, p in zip(kept["small"], kept["probabilities"])])
    assert (escalated == escalations(kept, person_threshold, UNSURE_BELOW_PERSON, UNSURE_ABOVE)).all()
    previous = previous_escalations(kept)
    kept = kept | {"cascade": np.where(escalated[:, None, None], kept["full"], kept["small"]),
                   "previous": np.where(previous[:, None, None], kept["full"], kept["small"])}
    full, cascade, before = design(kept, "full"), design(kept, "cascade"), design(kept, "previous")
    x = np.c_[np.log(np.clip(full["person"], 1e-4, 1 - 1e-4) / np.clip(1 - full["person"], 1e-4, 1)), full["masses"]]
    rules: dict[str, Rule] = {"detector": detector_rule(full["person"]),
                              "groups": groups_rule(full["person"], full["led"]),
                              "groups: the issue's four only": groups_rule(
                                  full["person"], full["candidates"]["worn, played, handled, ridden"]),
                              "logistic": logistic_rule(x), "logistic+coco": logistic_rule(np.c_[x, full["coco"]]),
                              "cascade: detector": detector_rule(cascade["person"]),
                              "cascade: groups": groups_rule(cascade["person"], cascade["led"]),
                              "cascade: groups, thresholds fitted on the single pass": transferred_rule(
                                  full["person"], cascade["person"], full["led"]),
                              "previous cascade: groups": groups_rule(before["person"], before["led"])}
    choices: dict[str, list[Any]] = {"groups, nested choice": [], "cascade: groups, nested choice": [],
                                     "cascade: band chosen in CV, groups": [],
                                     "cascade: band chosen in CV, groups, single pass's thresholds": []}
    rules["groups, nested choice"] = chosen_groups_rule(full["person"], full["candidates"],
                                                        choices["groups, nested choice"])
    rules["cascade: groups, nested choice"] = chosen_groups_rule(cascade["person"], cascade["candidates"],
                                                                 choices["cascade: groups, nested choice"])
    held_out_escalation: list[float] = []
    rules["cascade: band chosen in CV, groups"] = banded_rule(kept, person_threshold, full["led"],
                                                              choices["cascade: band chosen in CV, groups"],
                                                              held_out_escalation)
    rules["cascade: band chosen in CV, groups, single pass's thresholds"] = banded_rule(
        kept, person_threshold, full["led"], choices["cascade: band chosen in CV, groups, single pass's thresholds"],
        [], refit=False)
    clear = np.flatnonzero(~edge)
    result: dict[str, Any] = {"photos": len(truth), "people": int(truth.sum()), "edge_cases": int(edge.sum()),
                              "folds": folds, "repeats": repeats, "cross_validated": {}, "without_edge_cases": {}}
    for name, rule in rules.items():
        result["cross_validated"][name] = cross_validate(rule, truth, folds, repeats)
        result["without_edge_cases"][name] = cross_validate(restricted(rule, clear, truth), truth[clear], folds,
                                                            repeats)
    result["nested_choices"] = {name: {str(c): made.count(c) for c in sorted(set(made))}
                                for name, made in choices.items()}
    shipped = {"detector_min": DETECTOR_MIN_SCORE, "lowered_by": LOWERED_BY}
    result["shipped_rule"] = shipped | {"fitted_on_all": fitted_on_all(full["person"], full["led"], truth)}
    result["shipped_in_sample"] = {"single_416": in_sample(full["person"], full["led"], truth, **shipped),
                                   "cascade": in_sample(cascade["person"], cascade["led"], truth, **shipped),
                                   "previous_cascade": in_sample(before["person"], before["led"], truth, **shipped),
                                   "detector_alone_416": scores(full["person"] >= DETECTOR_MIN_SCORE, truth)}
    small_person = kept["small"][:, 0, 0]
    near = (small_person >= person_threshold - UNSURE_BELOW_PERSON) & (small_person < person_threshold + UNSURE_ABOVE)
    result["cascade"] = {"band": {"below_person": UNSURE_BELOW_PERSON, "below": UNSURE_BELOW, "above": UNSURE_ABOVE},
                         "escalated": round(float(escalated.mean()), 3),
                         "escalated_for_a_person": round(float(near.mean()), 3),
                         "previous_escalated": round(float(previous.mean()), 3),
                         "held_out_escalation_band_chosen_in_cv": round(float(np.mean(held_out_escalation[:folds * repeats])), 3),
                         "person_decisions_differing_from_single": int(((full["person"] >= person_threshold) !=
                                                                        (cascade["person"] >= person_threshold)).sum())}
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
