"""A folder remembers how it was sorted (model, weights, runtime, and the thresholds --top-k and --min-score) in
DIR/.imgclassify/settings.json: a later command on it that leaves those flags out uses them (a `--dry-run` after a
MobileNetV2 run does not try to download ResNet50), and passing a flag again changes what is remembered. Where
nothing is remembered: the environment (MODEL, MODEL_WEIGHTS, MODEL_RUNTIME, DEFAULT_TOP_K, DEFAULT_MIN_SCORE — the
same variables the cloud functions read), then the built-in defaults."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import bootstrap, config
from common.domain.jobs import STATE_DIR
from common.domain.options import MatchMode, Model, Runtime, choices
from common.domain.requests import REQUEST_FIELDS
from imgclassify.cli.output import printable

# What is remembered, each with how a kept (or environment) value is read back.
REMEMBERED: dict[str, Callable[[str], Any]] = {"model": str, "weights": str, "runtime": str, "top_k": int,
                                              "min_score": float, "default_match": str}
# The settings each option stands for (common/config.py: their variables and defaults live there). The CLI's own
# defaults are only where a command differs from a cloud instance: it lets Keras download ImageNet weights, and
# picks the runtime by the weights file. min_score None: the match rule's own tuned value, decided by the job.
SETTING_OF = {"model": "model", "weights": "weights", "runtime": "runtime", "top_k": "default_top_k",
              "min_score": "default_min_score", "default_match": "default_match"}
DEFAULTS: dict[str, Any] = {**{option: config.default(name) for option, name in SETTING_OF.items()},
                            "weights": "imagenet", "runtime": "auto"}
DEFAULTS["model"] = str(DEFAULTS["model"])
DEFAULTS["default_match"] = str(DEFAULTS["default_match"])  # serve --match: a job's rule when it asks for none
ENVIRONMENT = {option: config.variable(name) for option, name in SETTING_OF.items()}


SETTINGS_FILE = "settings.json"


def settings_file(root: Path) -> Path:
    return root / STATE_DIR / SETTINGS_FILE


def _in_range(key: str, value: Any) -> bool:
    if key == "model":
        return value in choices(Model)
    if key == "runtime":
        return value in (*choices(Runtime), "auto")
    if key == "default_match":
        return value in choices(MatchMode)
    field = REQUEST_FIELDS.get(key)  # the thresholds: the request schema's bounds, the one place they live
    if field is None or field.minimum is None or field.maximum is None:
        return True
    return isinstance(value, (int, float)) and math.isfinite(value) and field.minimum <= value <= field.maximum


def _read(key: str, raw: object) -> Any:
    """A kept or environment value as its option's type; None when it is missing, unreadable or out of range (the
    next source is used: a hand-edited file never stops a command)."""
    if raw is None or raw == "" or isinstance(raw, (bool, dict, list)):
        return None
    try:
        value = REMEMBERED[key](str(raw))
    except ValueError:
        return None
    return value if _in_range(key, value) else None


def _kept(root: Path) -> dict[str, object]:
    try:
        data = json.loads(bootstrap.read_state_file(root, SETTINGS_FILE) or b"{}")
    except ValueError:
        data = None
    if not isinstance(data, dict):
        _warn(root, "is not a JSON object of settings: ignored")
        return {}
    return data


def _warn(root: Path, what: str) -> None:
    """One line on stderr per problem with the file, naming it: the command goes on with the next source."""
    line = f"warning: {settings_file(root)} {what}"
    if line not in _WARNED:
        _WARNED.add(line)
        print(printable(line), file=sys.stderr)


_WARNED: set[str] = set()


def remembered(root: Path, warn: bool = True) -> dict[str, Any]:
    data = _kept(root)
    kept = {key: _read(key, data.get(key)) for key in REMEMBERED}
    bad = [key for key in REMEMBERED if kept[key] is None and data.get(key) not in (None, "")]
    if bad and warn:
        _warn(root, f"has unreadable or out-of-range {', '.join(f'{k}={data[k]!r}' for k in bad)}: skipped")
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
    data = remembered(root, warn=False)
    for key in REMEMBERED:
        if hasattr(args, key):
            data[key] = getattr(args, key)
    weights = str(data.get("weights", ""))
    if weights and weights not in ("imagenet", "none"):
        data["weights"] = str(Path(weights).resolve())
    data = {key: (str(value) if key in ("model", "runtime", "default_match") else value) for key, value in data.items()
            if value is not None}
    bootstrap.write_state_file(root, SETTINGS_FILE, (json.dumps(data, indent=2) + "\n").encode("utf-8"))
