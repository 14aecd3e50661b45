"""Build LiteRT artifacts (fp32 and full-int8) for a Keras ImageNet model, run the accuracy guard, print JSON.

  .venv/bin/python tools/build_tflite.py --model mobilenet_v2 \
      --weights ../shared/models/mobilenet_v2/mobilenet_v2_imagenet.weights.h5 \
      --calibration ../shared/photos/coral ../shared/photos/skimage --guard ../shared/photos/imagenet-dev \
      --out build/models

Calibration and guard photos should be different photos: the guard then measures what users will see.
Exit status 3 when --require int8 (or fp32) was asked for and that artifact failed the guard.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imgclassify.litert_build import (KINDS, artifact_path, build_artifacts, decode_photos, disjoint_halves,  # noqa: E402
                            weights_key)
from common.logs import send_logs_to_stderr  # noqa: E402


def with_flips(pixels: np.ndarray) -> np.ndarray:
    """Mirrored copies double a small calibration set."""
    return np.concatenate([pixels, pixels[:, :, ::-1]])


def load(folders: list[Path], limit: int) -> np.ndarray:
    pixels = decode_photos(folders, limit)
    if pixels is None:
        raise SystemExit(f"build_tflite: no readable photos under {', '.join(map(str, folders))}")
    return pixels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, choices=["resnet50", "mobilenet_v2"])
    parser.add_argument("--weights", required=True, help="Keras weights file, 'imagenet' or 'none'")
    parser.add_argument("--calibration", nargs="+", type=Path, required=True)
    parser.add_argument("--guard", nargs="+", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--require", choices=KINDS, help="fail (exit 3) unless this kind passes the guard")
    args = parser.parse_args()
    send_logs_to_stderr()

    if sorted(args.calibration) == sorted(args.guard):
        calibration, guard_images = disjoint_halves(load(args.guard, 1000))
    else:
        calibration = with_flips(load(args.calibration, 200))
        guard_images = load(args.guard, 1000)
    sidecars = build_artifacts(args.model, args.weights, calibration, guard_images, args.out, args.kinds)
    key = weights_key(args.model, args.weights)
    for kind in sidecars:
        sidecars[kind]["path"] = str(artifact_path(args.out, key, kind))
    print(json.dumps(sidecars, indent=2))
    if args.require and not sidecars.get(args.require, {}).get("accepted"):
        print(f"build_tflite: the {args.require} artifact failed the accuracy guard", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
