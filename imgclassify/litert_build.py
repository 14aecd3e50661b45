"""Compile a Keras ImageNet model to LiteRT (.tflite) — fp32, full-int8 calibrated on real photos, and int8 with
its worst-quantizing layers in float — and accept an artifact only if it agrees with the Keras fp32 model (the
accuracy guard).

Needs TensorFlow (a build step); running the result needs only ai-edge-litert. Artifacts are cached by the
weights' hash, with a JSON sidecar recording how they were made and what the guard measured.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.domain.jobs import HIERARCHY_MIN_SCORE
from common.domain.matching import hierarchy_scores
from common.domain.options import Model
from common.inference.classifier import preprocess
from common.inference.keras import KerasClassifier
from common.inference.litert import LiteRTClassifier
from common.logs import get_logger

log = get_logger("compile")

# The guard's thresholds (issue 5): top-1 agreement, and agreement of class-match decisions for these queries.
MIN_TOP1_AGREEMENT = 0.98
MIN_DECISION_AGREEMENT = 0.99
GUARD_QUERIES = ("dog", "cat", "bird", "fish", "snake", "monkey", "truck", "car", "vehicle", "boat", "aircraft",
                 "fruit", "food", "furniture", "building", "musical instrument")
# Fastest first. "int8-mixed" keeps the few layers that quantize worst in float (TFLite's selective quantization),
# tried only when full int8 fails the guard.
KINDS = ("int8", "int8-mixed", "fp32")
MIXED_FLOAT_LAYERS = 3
MIN_GUARD_PHOTOS = 50  # below this, int8 accuracy cannot be verified on the user's photos: fp32 only
BUILD_PHOTO_LIMIT = 400


@dataclass(frozen=True)
class GuardReport:
    images: int
    top1_agreement: float
    decision_agreement: float
    accepted: bool


def decode_photos(folders: Sequence[Path], limit: int) -> np.ndarray | None:
    """Up to `limit` photos under these folders (recursively, in name order) as model input; files that are hidden
    or cannot be read as images are skipped. None when there is none."""
    from common.domain.errors import PermanentImageError
    from common.inference.decoding import decode_image

    images: list[Any] = []
    for folder in folders:
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            if len(images) >= limit:
                break
            try:
                images.append(decode_image(path.read_bytes()))
            except (PermanentImageError, OSError):
                continue
    return np.stack(images) if images else None


def disjoint_halves(photos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(calibration, guard) from one set of photos: the guard then measures photos calibration never saw."""
    return photos[::2], photos[1::2]


# Part of every artifact's name: 2 = with the features output (builds without it are rebuilt once).
BUILD_FORMAT = 2


def weights_key(model: Model, weights: str) -> str:
    if weights in ("imagenet", "none"):
        return f"{model}-{weights}-b{BUILD_FORMAT}"
    digest = hashlib.sha256()
    with open(weights, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return f"{model}-{digest.hexdigest()[:16]}-b{BUILD_FORMAT}"


def default_cache_dir() -> Path:
    return Path(os.environ.get("IMGCLASSIFY_CACHE", Path.home() / ".cache" / "imgclassify"))


def artifact_path(cache_dir: Path, key: str, kind: str) -> Path:
    return cache_dir / f"{key}-{kind}.tflite"


def _converter(keras_classifier: KerasClassifier, kind: str, calibration: np.ndarray | None) -> tuple[Any, Any]:
    import tensorflow as tf

    # Two outputs: the probabilities and the penultimate features (classes defined by examples use those).
    converter = tf.lite.TFLiteConverter.from_keras_model(keras_classifier.with_features)
    if kind == "fp32":
        return converter, None
    if calibration is None or not len(calibration):
        raise ValueError(f"{kind} needs calibration photos")
    model = keras_classifier.model

    def representative() -> Iterator[list[Any]]:
        for image in calibration:
            yield [preprocess(model, image[None])]

    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter, representative


def _worst_layers(keras_classifier: KerasClassifier, calibration: np.ndarray, count: int) -> list[str]:
    """The tensors whose quantization error is largest relative to their scale, on the calibration photos."""
    import tensorflow as tf

    converter, representative = _converter(keras_classifier, "int8", calibration)
    debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative)
    debugger.run()
    stats = io.StringIO()
    debugger.layer_statistics_dump(stats)
    stats.seek(0)
    rows = [r for r in csv.DictReader(stats) if float(r["scale"]) > 0]
    rows.sort(key=lambda r: -(float(r["mean_squared_error"]) ** 0.5 / float(r["scale"])))
    return [r["tensor_name"] for r in rows[:count]]


def convert(keras_classifier: KerasClassifier, kind: str, calibration: np.ndarray | None = None) -> bytes:
    import tensorflow as tf

    # The converter prints the whole SavedModel signature (tens of KB per conversion) on stdout: drop it, so it
    # neither pollutes our output nor fills a pipe nobody reads.
    with contextlib.redirect_stdout(io.StringIO()):
        converter, representative = _converter(keras_classifier, kind, calibration)
        if kind != "int8-mixed":
            return converter.convert()
        assert calibration is not None
        options = tf.lite.experimental.QuantizationDebugOptions(
            denylisted_nodes=_worst_layers(keras_classifier, calibration, MIXED_FLOAT_LAYERS))
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=representative,
                                                             debug_options=options)
        return debugger.get_nondebug_quantized_model()


def _predict(classifier: object, pixels: np.ndarray, batch: int = 32) -> np.ndarray:
    return np.concatenate([classifier.predict(pixels[i:i + batch]) for i in range(0, len(pixels), batch)])  # type: ignore[attr-defined]


def guard(reference: np.ndarray, candidate: np.ndarray, queries: Sequence[str] = GUARD_QUERIES,
          min_score: float = HIERARCHY_MIN_SCORE) -> GuardReport:
    """Compare a candidate's probabilities with the Keras fp32 reference on the same photos."""
    top1 = float(np.mean(reference.argmax(axis=1) == candidate.argmax(axis=1)))
    agree = []
    for r, c in zip(reference, candidate):
        ours, theirs = hierarchy_scores(queries, r), hierarchy_scores(queries, c)
        agree += [(ours[q] >= min_score) == (theirs[q] >= min_score) for q in queries]
    decisions = float(np.mean(agree)) if agree else 1.0
    return GuardReport(len(reference), round(top1, 4), round(decisions, 4),
                       top1 >= MIN_TOP1_AGREEMENT and decisions >= MIN_DECISION_AGREEMENT)


def build_artifacts(model: Model, weights: str, calibration: np.ndarray, guard_images: np.ndarray,
                    cache_dir: Path | None = None, kinds: Sequence[str] = KINDS) -> dict[str, dict]:
    """Compile each kind, run the guard, write artifact + sidecar. Returns the sidecars."""
    cache_dir = cache_dir or default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    keras_classifier = KerasClassifier(model, weights)
    reference = _predict(keras_classifier, guard_images)
    key = weights_key(model, weights)
    sidecars: dict[str, dict] = {}
    for kind in kinds:
        if kind == "int8-mixed" and sidecars.get("int8", {}).get("accepted"):
            continue  # full int8 passed: nothing to fall back to
        path = artifact_path(cache_dir, key, kind)
        partial = path.with_suffix(".partial")
        partial.write_bytes(convert(keras_classifier, kind, calibration))
        report = guard(reference, _predict(LiteRTClassifier(model, str(partial)), guard_images))
        partial.rename(path)
        sidecar = {"model": model, "kind": kind, "weights": os.path.basename(weights), "key": key,
                   "calibration_images": int(len(calibration)) if kind != "fp32" else 0,
                   "float_layers": MIXED_FLOAT_LAYERS if kind == "int8-mixed" else 0,
                   "guard": asdict(report), "accepted": report.accepted, "bytes": path.stat().st_size}
        path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
        log.info("artifact built", extra={"artifact": str(path), **sidecar})
        sidecars[kind] = sidecar
    return sidecars


def accepted_artifact(cache_dir: Path, key: str) -> Path | None:
    """The fastest cached artifact that passed the guard (int8 before fp32), if any."""
    for kind in KINDS:
        path = artifact_path(cache_dir, key, kind)
        sidecar = path.with_suffix(".json")
        if path.exists() and sidecar.exists() and json.loads(sidecar.read_text()).get("accepted"):
            return path
    return None


def has_artifacts(cache_dir: Path, key: str) -> bool:
    """fp32 is always built; int8 only when there were enough photos to verify it."""
    return artifact_path(cache_dir, key, "fp32").with_suffix(".json").exists()


def ensure_build(model: Model, weights: str, photo_folders: Sequence[Path], cache_dir: Path,
                 on_first_build: Callable[[], None] | None = None) -> Path | None:
    """The fastest guarded LiteRT build of these weights, compiling them on first use (half of up to 400 of the
    photos calibrate, the other half guard). None when no build passed the guard, or there is no photo to build
    with."""
    key = weights_key(model, weights)
    if not has_artifacts(cache_dir, key):
        photos = decode_photos(photo_folders, limit=BUILD_PHOTO_LIMIT)
        if photos is None:
            return None
        if on_first_build is not None:
            on_first_build()
        calibration, guard_photos = disjoint_halves(photos)
        kinds = KINDS if len(guard_photos) >= MIN_GUARD_PHOTOS else ("fp32",)
        build_artifacts(model, weights, calibration, guard_photos, cache_dir, kinds)
    return accepted_artifact(cache_dir, key)


def describe_builds(cache_dir: Path, key: str) -> str:
    """Which builds were made, what the guard measured, and which one is used — in one line each."""
    lines, chosen = [], accepted_artifact(cache_dir, key)
    for kind in KINDS:
        sidecar = artifact_path(cache_dir, key, kind).with_suffix(".json")
        if not sidecar.exists():
            continue
        data = json.loads(sidecar.read_text())
        guard = data["guard"]
        verdict = "passed" if data["accepted"] else "failed"
        lines.append(f"  {kind}: {verdict} the accuracy guard (top-1 agreement {guard['top1_agreement']:.1%}, class "
                     f"decisions {guard['decision_agreement']:.1%}, on {guard['images']} of your photos)")
    lines.append(f"  using {chosen.name if chosen else 'the Keras runtime (no build passed)'}")
    return "\n".join(lines)
