"""A folder remembers how it was sorted (model, weights, runtime) in DIR/.imgclassify/settings.json: a later
command on it that leaves those flags out uses them (a `--dry-run` after a MobileNetV2 run does not try to
download ResNet50), and passing a flag again changes what is remembered. Where nothing is remembered: the
environment (MODEL, MODEL_WEIGHTS, MODEL_RUNTIME), then the built-in defaults."""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from common.domain.jobs import STATE_DIR
from common.domain.options import Model

REMEMBERED = ("model", "weights", "runtime")
DEFAULTS = {"model": Model.RESNET50.value, "weights": "imagenet", "runtime": "auto"}
ENVIRONMENT = {"model": "MODEL", "weights": "MODEL_WEIGHTS", "runtime": "MODEL_RUNTIME"}


def settings_file(root: Path) -> Path:
    return root / STATE_DIR / "settings.json"


def remembered(root: Path) -> dict[str, str]:
    try:
        data = json.loads(settings_file(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {key: str(data[key]) for key in REMEMBERED if isinstance(data, dict) and data.get(key)}


def fill_in(args: argparse.Namespace, root: Path | None) -> dict[str, str]:
    """Set each model option left out from the folder, the environment or the default; which ones were given."""
    given = {key: getattr(args, key) for key in REMEMBERED if getattr(args, key, None) is not None}
    kept = remembered(root) if root is not None else {}
    for key in REMEMBERED:
        if getattr(args, key, None) is None:
            setattr(args, key, kept.get(key) or os.environ.get(ENVIRONMENT[key]) or DEFAULTS[key])
    return given


def remember(args: argparse.Namespace, root: Path) -> None:
    """Keep the options this command ran with (weights as an absolute path: the next command may run elsewhere)."""
    weights = str(args.weights)
    if weights not in ("imagenet", "none"):
        weights = str(Path(weights).resolve())
    data = {"model": str(args.model), "weights": weights, "runtime": str(args.runtime)}
    path = settings_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
