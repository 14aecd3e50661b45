"""Fetch a model's ImageNet weights with Keras (which downloads them: needs internet) and save them as a
.weights.h5 file — deploy.sh's default when no weights are given.

  .venv/bin/python -m imgclassify.weights --model resnet50 --out build/models/resnet50-imagenet.weights.h5
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from common.domain.errors import ConfigurationError
from common.domain.options import Model, choices


def file_kind(path: str) -> str | None:
    """"tflite" or "keras" from a weights file's first bytes, None when it is neither (the model may never load:
    every photo known to the prediction store, so the file is checked now)."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if head[4:8] == b"TFL3":
        return "tflite"
    if head == b"\x89HDF\r\n\x1a\n":
        return "keras"
    return None


# Parameters in each model's ImageNet weights (Keras applications): 3.5 M for MobileNetV2, 25.6 M for ResNet50.
PARAMETERS = {Model.MOBILENET_V2: 3_538_984, Model.RESNET50: 25_636_712}


def infer_model(path: str) -> Model | None:
    """Which model a Keras weights file is for, from how many parameters it holds (the layer names in a Keras 3
    .weights.h5 are generic); None when it is neither or cannot be read."""
    try:
        import h5py
    except ImportError:
        return None
    total = 0

    def count(_: str, item: object) -> None:
        nonlocal total
        if isinstance(item, h5py.Dataset):
            total += int(item.size)

    try:
        with h5py.File(path, "r") as weights:
            weights.visititems(count)
    except OSError:
        return None
    close = [model for model, parameters in PARAMETERS.items() if abs(total - parameters) <= 0.02 * parameters]
    return close[0] if close else None


def infer_tflite_model(path: str) -> Model | None:
    """Which model a .tflite file is (common/inference/litert.py reads it); None when it does not say or cannot be
    opened."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        from common.inference.litert import model_of
        from common.inference.native import litert_chatter_filtered
    except ImportError:
        return None
    try:
        with litert_chatter_filtered():
            return model_of(Interpreter(model_path=path))
    except (ValueError, RuntimeError):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=choices(Model))
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    from common.inference.keras import KerasClassifier

    try:
        network = KerasClassifier(Model(args.model), "imagenet").net
    except ConfigurationError as exc:
        print(f"imgclassify.weights: {exc}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial.weights.h5")
    network.save_weights(partial)
    partial.rename(args.out)  # a half-written file is never taken for the weights
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
