"""Classes taught by a few example photos, in an open world: does a taught class take only what looks like them?

Every dev photo (imagenet-dev, flowers-dev, coral, skimage: 535) is one folder. A class is taught by `--shots`
photos drawn from its own (dogs: the imagenet-dev photos whose ImageNet class descends from dog.n.01 and the coral
dogs; roses: flowers-dev/roses; …) and the folder holds everything else, the class's other photos included. The
job asks for that class alone, as `run --classes dogs --examples dogs=FOLDER` does; the pairs roses+tulips and
daisy+dandelion are also asked together (a folder taught two look-alike classes). Per rule, class, number of
examples and draw: precision and recall on the folder (a photo of the class's `ignore` set — a big cat for `cats`,
the traffic frame for `vehicles` — counts neither way; a draw where a rule takes nothing has precision 1.0, and a
rule that refuses to sort says why: counted under `refused`). Medians over the draws.

Classes are split: `dev` ones are where rules were compared and tuned, `held-out` ones were only measured once the
rule was chosen (docs/quality.md, "Classes from example photos").

  .venv/bin/python bench/examples_open_world.py \
      --weights build/bench-models/mobilenet_v2-34be146f4b85cdf3-b2-int8-mixed.tflite \
      --out bench/results/examples-open-world.json

The features and probabilities are computed once per build and cached beside it (`--cache`).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.machine import describe, emit  # noqa: E402

FOLDERS = ("imagenet-dev", "flowers-dev", "coral", "skimage")
PHOTO_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp")


@dataclass(frozen=True)
class Taught:
    """A class as the bench teaches it: its photos (by synsets for imagenet-dev, by name elsewhere)."""

    name: str
    split: str  # "dev" or "held-out"
    synsets: tuple[str, ...] = ()  # imagenet-dev photos whose ImageNet class descends from one of these
    names: tuple[str, ...] = ()  # photos by id ("coral/owl.jpg") or folder ("flowers-dev/roses/")
    ignore_synsets: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()


CLASSES = (
    Taught("dogs", "dev", ("dog.n.01",), ("coral/pets.jpg", "coral/imprinting_dog_test_0.bmp",
                                          "coral/imprinting_dog_train_0.bmp"), ("canine.n.02",)),
    Taught("birds", "dev", ("bird.n.01",), ("coral/bird.bmp", "coral/owl.jpg", "coral/parrot.jpg")),
    Taught("roses", "dev", names=("flowers-dev/roses/",)),
    Taught("tulips", "dev", names=("flowers-dev/tulips/",)),
    Taught("daisy", "dev", ("daisy.n.01",), ("flowers-dev/daisy/",)),
    Taught("food", "dev", ("food.n.01", "food.n.02"), ("coral/hot_dog.jpg", "coral/missvickie_potato_chips.bmp"),
           ignore=("skimage/coffee.png", "imagenet-dev/n07565083_menu.JPEG", "imagenet-dev/n07579787_plate.JPEG")),
    Taught("sunflowers", "held-out", names=("flowers-dev/sunflowers/", "coral/sunflower.bmp")),
    Taught("dandelion", "held-out", names=("flowers-dev/dandelion/",)),
    Taught("cats", "held-out", ("domestic_cat.n.01",), ("coral/cat.bmp", "coral/cat_720p.jpg",
                                                         "coral/imprinting_cat_test_0.bmp", "skimage/chelsea.png"),
           ("feline.n.01",)),
    Taught("fish", "held-out", ("fish.n.01",)),
    Taught("insects", "held-out", ("insect.n.01",), ("coral/dragonfly.bmp",)),
    Taught("instruments", "held-out", ("musical_instrument.n.01",)),
    Taught("furniture", "held-out", ("furniture.n.01",)),
    Taught("vehicles", "held-out", ("motor_vehicle.n.01",), ("skimage/motorcycle_left.png",),
           ignore=("coral/automl_video_ondevice_traffic_frames_0001.bmp",)),
)
PAIRS = (("roses", "tulips"), ("daisy", "dandelion"))
MIN_LEFT = 3  # a class is measured at a number of examples only if at least this many of its photos are left


def dev_photos(shared: Path) -> list[str]:
    """Every photo's id: "<folder>/<path under it>", sorted."""
    found = []
    for folder in FOLDERS:
        root = shared / folder
        found += [f"{folder}/{p.relative_to(root)}" for p in sorted(root.rglob("*"))
                  if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES]
    return sorted(found)


def membership(photos: list[str], taught: Taught) -> tuple[np.ndarray, np.ndarray]:
    """(the class's photos, the photos that count neither way), as boolean masks."""
    from common.domain.labels import imagenet_classes
    from common.domain.taxonomy import load_taxonomy

    taxonomy = load_taxonomy()
    by_wnid = {c.wnid: c.index for c in imagenet_classes()}

    def under(synsets: tuple[str, ...]) -> set[int]:
        return set().union(*(taxonomy.cover[taxonomy.by_name[s]] for s in synsets)) if synsets else set()

    def mask(synsets: tuple[str, ...], names: tuple[str, ...]) -> np.ndarray:
        classes = under(synsets)
        return np.array([(p.startswith("imagenet-dev/") and by_wnid.get(p.split("/")[1].split("_")[0]) in classes)
                         or any(p == n or (n.endswith("/") and p.startswith(n)) for n in names) for p in photos])

    named_ignore = mask((), taught.ignore)
    positive = mask(taught.synsets, taught.names) & ~named_ignore
    return positive, (mask(taught.ignore_synsets, ()) | named_ignore) & ~positive


def compute_vectors(weights: Path, model: str, shared: Path, photos: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, features) per photo, the features through float16 as the prediction store keeps them."""
    from common.domain.options import Model, Runtime
    from common.inference.classifier import ModelConfig
    from common.inference.decoding import decode_image
    from common.inference.loader import load_classifier

    runtime = Runtime.LITERT if weights.suffix == ".tflite" else Runtime.KERAS
    classifier = load_classifier(ModelConfig(Model(model), str(weights), runtime))
    probabilities, features = [], []
    for start in range(0, len(photos), 32):
        pixels = np.stack([decode_image((shared / p).read_bytes()) for p in photos[start:start + 32]])
        p, f = classifier.predict_with_features(pixels)
        if f is None:
            raise SystemExit(f"{weights.name} has no features output: build it with imgclassify (…-b2-…)")
        probabilities.append(p)
        features.append(f)
    return (np.concatenate(probabilities).astype(np.float32),
            np.concatenate(features).astype(np.float16).astype(np.float32))


def load_vectors(args: argparse.Namespace, photos: list[str]) -> tuple[np.ndarray, np.ndarray]:
    cache = args.cache or args.weights.with_suffix(".open-world.npz")
    if cache.exists():
        kept = np.load(cache, allow_pickle=False)
        if list(kept["photos"]) == photos:
            return kept["probabilities"], kept["features"]
    probabilities, features = compute_vectors(args.weights, args.model, args.shared, photos)
    np.savez_compressed(cache, photos=np.array(photos), probabilities=probabilities, features=features)
    return probabilities, features


# --- rules: (examples per class as (features, probabilities), the folder's names, features, probabilities)
#     -> per class, which of the folder's photos it takes (or the reason it refuses to sort)

Examples = dict[str, tuple[np.ndarray, np.ndarray]]
Decision = dict[str, np.ndarray | str]
Rule = Callable[[Examples, list[str], np.ndarray, np.ndarray], Decision]


def _background(names: list[str]) -> list[int]:
    """Where the service's background sample of this folder is among its photos."""
    from common.domain.examples import background_sample

    index = {n: i for i, n in enumerate(names)}
    return [index[n] for n in background_sample(names)]


def shipped_rule(examples: Examples, names: list[str], features: np.ndarray, probabilities: np.ndarray) -> Decision:
    """The rule as common/domain/examples.py ships it, photo by photo as classify_image calls it."""
    from common.domain import examples as rule

    index = _background(names)
    model = rule.learn({c: f for c, (f, _) in examples.items()}, features[index],
                       probabilities={c: p for c, (_, p) in examples.items()},
                       background_probabilities=probabilities[index])
    decided = {c: np.zeros(len(names), bool) for c in examples}
    for i in range(len(names)):
        for c in model.matches(features[i], probabilities[i]):
            decided[c][i] = True
    return {c: model.refused.get(c, decided[c]) for c in examples}


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.atleast_2d(rows)
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-8)


def _prototype_rule(threshold: Callable[[np.ndarray, np.ndarray], float]) -> Rule:
    """Nearest prototype, centred on the background and the examples, each class's threshold from (its examples'
    leave-one-out similarities, the background's similarities to its prototype)."""
    def rule(examples: Examples, names: list[str], features: np.ndarray, probabilities: np.ndarray) -> Decision:
        background = features[_background(names)]
        centre = np.concatenate([*(f for f, _ in examples.values()), background]).mean(axis=0)
        prototypes, thresholds = [], []
        for rows, _ in examples.values():
            units = _unit(rows - centre)
            loo = np.array([float(_unit(np.delete(units, i, 0).mean(0))[0] @ units[i]) for i in range(len(units))])
            prototypes.append(_unit(units.mean(axis=0))[0])
            thresholds.append(threshold(loo, _unit(background - centre) @ prototypes[-1]))
        similarity = _unit(features - centre) @ np.stack(prototypes).T
        nearest = similarity.argmax(axis=1)
        return {c: (nearest == j) & (similarity[:, j] >= thresholds[j] - 1e-6) for j, c in enumerate(examples)}
    return rule


def meaning_only_rule(examples: Examples, names: list[str], features: np.ndarray, probabilities: np.ndarray
                      ) -> Decision:
    """The previous rule, and the examples' meaning where it is clear (no folder-calibrated margin)."""
    from common.domain.examples import MEANING_MASS, meaning_of

    index = _background(names)
    decided = previous(examples, names, features, probabilities)
    for c, (_, p) in examples.items():
        meaning = meaning_of(p, probabilities[index])
        if meaning is not None:
            decided[c] = decided[c] & (probabilities[:, meaning.classes].sum(axis=1) >= MEANING_MASS)
    return decided


previous = _prototype_rule(lambda loo, folder: float(np.quantile(loo, 0.2)))
RULES: dict[str, Rule] = {
    "shipped": shipped_rule,
    "previous (examples' agreement only)": previous,
    "folder's 98th percentile": _prototype_rule(lambda loo, folder: max(float(np.quantile(loo, 0.2)),
                                                                        float(np.quantile(folder, 0.98)))),
    "meaning only, no folder margin": meaning_only_rule,
}


def _scores(taken: np.ndarray, truth: np.ndarray, ignore: np.ndarray) -> tuple[float, float]:
    counted = ~ignore
    tp = int(np.sum(taken & truth & counted))
    fp = int(np.sum(taken & ~truth & counted))
    return (tp / (tp + fp) if tp + fp else 1.0), tp / max(1, int(np.sum(truth & counted)))


def run(rules: dict[str, Rule], photos: list[str], probabilities: np.ndarray, features: np.ndarray,
        shots: list[int], draws: int, jobs: list[tuple[str, ...]]) -> dict[str, object]:
    truth = {t.name: membership(photos, t) for t in CLASSES}
    found: dict[str, object] = {}
    for rule_name, rule in rules.items():
        per_job: dict[str, object] = {}
        for job in jobs:
            for k in shots:
                if any(int(truth[c][0].sum()) - k < MIN_LEFT for c in job):
                    continue
                precision: dict[str, list[float]] = {c: [] for c in job}
                recall: dict[str, list[float]] = {c: [] for c in job}
                refused: dict[str, list[str]] = {c: [] for c in job}
                for draw in range(draws):
                    rng = np.random.default_rng(1000 * draw + k)
                    chosen = {c: rng.permutation(np.flatnonzero(truth[c][0]))[:k] for c in job}
                    folder = np.setdiff1d(np.arange(len(photos)), np.concatenate(list(chosen.values())))
                    decided = rule({c: (features[i], probabilities[i]) for c, i in chosen.items()},
                                   [photos[i] for i in folder], features[folder], probabilities[folder])
                    for c in job:
                        if isinstance(decided[c], str):
                            refused[c].append(decided[c])
                            taken = np.zeros(len(folder), bool)
                        else:
                            taken = decided[c]
                        p, r = _scores(taken, truth[c][0][folder], truth[c][1][folder])
                        precision[c].append(p)
                        recall[c].append(r)
                key = "+".join(job)
                for c in job:
                    entry = per_job.setdefault(key if len(job) == 1 else f"{key}:{c}", {})
                    entry[str(k)] = {"precision": round(statistics.median(precision[c]), 3),
                                     "recall": round(statistics.median(recall[c]), 3),
                                     "refused": len(refused[c]),
                                     **({"refusal": refused[c][0]} if refused[c] else {})}
        found[rule_name] = {"classes": per_job, "summary": summarise(per_job, shots)}
    return found


def summarise(per_job: dict[str, object], shots: list[int]) -> dict[str, object]:
    """Per split and number of examples: the mean over classes of the median precision and recall, and how many
    classes reach precision >= 0.8 with recall >= 0.5."""
    split = {t.name: t.split for t in CLASSES}
    summary: dict[str, object] = {}
    for part in ("dev", "held-out"):
        for k in shots:
            rows = [entry[str(k)] for key, entry in per_job.items()  # type: ignore[union-attr]
                    if "+" not in key and split[key] == part and str(k) in entry]  # type: ignore[operator]
            if rows:
                summary[f"{part} {k}"] = {
                    "classes": len(rows),
                    "precision": round(statistics.fmean(r["precision"] for r in rows), 3),
                    "recall": round(statistics.fmean(r["recall"] for r in rows), 3),
                    "meeting_0.8_0.5": sum(r["precision"] >= 0.8 and r["recall"] >= 0.5 for r in rows),
                    "refused": sum(r["refused"] for r in rows)}
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared/photos")
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--shots", type=int, nargs="+", default=[3, 4, 5, 10])
    parser.add_argument("--draws", type=int, default=9)
    parser.add_argument("--rules", nargs="+", default=list(RULES), choices=list(RULES))
    parser.add_argument("--cache", type=Path, help="where the features are kept (default: beside --weights)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    photos = dev_photos(args.shared)
    probabilities, features = load_vectors(args, photos)
    jobs = [(t.name,) for t in CLASSES] + list(PAIRS)
    started = time.perf_counter()
    found = run({r: RULES[r] for r in args.rules}, photos, probabilities, features, args.shots, args.draws, jobs)
    emit({"benchmark": "examples_open_world", "machine": describe(), "model": args.model,
          "weights": args.weights.name, "photos": len(photos), "draws": args.draws, "shots": args.shots,
          "seconds": round(time.perf_counter() - started, 1), "rules": found}, args.out)


if __name__ == "__main__":
    main()
