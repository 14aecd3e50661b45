"""A folder remembers how it was sorted (model, weights, runtime, and the thresholds --top-k and --min-score) in
DIR/.imgclassify/settings.json: a later command on it that leaves those flags out uses them (a `--dry-run` after a
MobileNetV2 run does not try to download ResNet50), and passing a flag again changes what is remembered. Where
nothing is remembered: the environment (MODEL, MODEL_WEIGHTS, MODEL_RUNTIME, DEFAULT_TOP_K, DEFAULT_MIN_SCORE — the
same variables the cloud functions read), then the built-in defaults."""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.domain.jobs import STATE_DIR
from common.domain.options import Model

# What is remembered, each with how a kept (or environment) value is read back.
REMEMBERED: dict[str, Callable[[str], Any]] = {"model": str, "weights": str, "runtime": str, "top_k": int,
                                              "min_score": float}
# None: the match rule's own tuned value (min_score), decided by the job, not here.
DEFAULTS: dict[str, Any] = {"model": Model.RESNET50.value, "weights": "imagenet", "runtime": "auto", "top_k": 5,
                            "min_score": None}
ENVIRONMENT = {"model": "MODEL", "weights": "MODEL_WEIGHTS", "runtime": "MODEL_RUNTIME", "top_k": "DEFAULT_TOP_K",
               "min_score": "DEFAULT_MIN_SCORE"}


def settings_file(root: Path) -> Path:
    return root / STATE_DIR / "settings.json"


def _read(key: str, raw: object) -> Any:
    """A kept or environment value as its option's type; None when it is missing or unreadable (the next source
    is used: a hand-edited file never stops a command)."""
    if raw is None or raw == "":
        return None
    try:
        return REMEMBERED[key](str(raw))
    except ValueError:
        return None


def remembered(root: Path) -> dict[str, Any]:
    try:
        data = json.loads(settings_file(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    kept = {key: _read(key, data.get(key)) for key in REMEMBERED}
    return {key: value for key, value in kept.items() if value is not None}


def remembered_model(root: Path | None) -> str | None:
    return remembered(root).get("model") if root is not None else None


THRESHOLDS = ("top_k", "min_score")


def fill_in(args: argparse.Namespace, root: Path | None, keys: tuple[str, ...] = tuple(REMEMBERED)) -> dict[str, Any]:
    """Set each of these options this command has and left out from the folder, the environment or the default;
    returns the ones given on the command line."""
    mine = [key for key in keys if hasattr(args, key)]
    given = {key: getattr(args, key) for key in mine if getattr(args, key) is not None}
    kept = remembered(root) if root is not None else {}
    for key in mine:
        if getattr(args, key) is None:
            value = kept.get(key)
            if value is None:
                value = _read(key, os.environ.get(ENVIRONMENT[key]))
            setattr(args, key, DEFAULTS[key] if value is None else value)
    return given


def remember(args: argparse.Namespace, root: Path) -> None:
    """Keep the options this command ran with (weights as an absolute path: the next command may run elsewhere)."""
    data = remembered(root)
    for key in REMEMBERED:
        if hasattr(args, key):
            data[key] = getattr(args, key)
    weights = str(data.get("weights", ""))
    if weights and weights not in ("imagenet", "none"):
        data["weights"] = str(Path(weights).resolve())
    data = {key: (str(value) if key in ("model", "runtime") else value) for key, value in data.items()
            if value is not None}
    path = settings_file(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
