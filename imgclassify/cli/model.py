"""Which model build a command uses: the options checked, and the fastest LiteRT build that passed the accuracy
guard (compiled and cached on first use), with the converter's native chatter kept off the terminal."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from common.domain.options import Model, Runtime, choices
from imgclassify.cli.options import UsageError
from imgclassify.cli.remembered import fill_in, remembered_model
from imgclassify.weights import file_kind, infer_model, infer_tflite_model


def check_model_options(args: argparse.Namespace, root: Path | None = None) -> None:
    """The model options, filled in from the folder's remembered ones (then the environment, the defaults) and
    checked; a Keras weights file names its own model when --model is left out."""
    given = fill_in(args, root)
    if args.model not in choices(Model):
        raise UsageError(f"unknown model {args.model!r}: choose one of {', '.join(choices(Model))}")
    args.model = Model(args.model)
    if args.weights not in ("imagenet", "none"):
        if not Path(args.weights).is_file():
            raise UsageError(f"weights file not found: {args.weights}")
        kind = file_kind(args.weights)
        if kind is None:
            raise UsageError(f"cannot load {args.weights}: neither a LiteRT .tflite model nor a Keras .h5 file")
        # A .tflite is only opened (LiteRT imported) when no model was named: a run over known photos loads none.
        inferred = infer_model(args.weights) if kind == "keras" else \
            infer_tflite_model(args.weights) if "model" not in given and not remembered_model(root) else None
        if inferred is not None and inferred != args.model:
            if "model" in given:
                raise UsageError(f"{args.weights} holds {inferred}'s weights, not {args.model}'s: pass --model "
                                 f"{inferred} (or leave --model out)")
            args.model = inferred
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")


@contextlib.contextmanager
def native_output_silenced(silence: bool) -> Iterator[TextIO]:
    """TensorFlow's converter and LiteRT print from native code ("fully_quantize: 0 …", "Created TensorFlow Lite
    XNNPACK delegate"), past Python's logging: point file descriptors 1 and 2 at /dev/null while they work. Yields
    where our own lines go meanwhile: a copy of the terminal's stderr."""
    if not silence:
        yield sys.stderr
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    devnull = os.open(os.devnull, os.O_WRONLY)
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1)
    try:
        for fd in (1, 2):
            os.dup2(devnull, fd)
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)
        terminal.close()


def choose_weights(args: argparse.Namespace, photos: Path | None) -> tuple[str, Runtime]:
    """(weights, runtime): a cached LiteRT build that passed the guard, compiling one on first use."""
    if args.weights.endswith(".tflite"):
        return args.weights, Runtime.LITERT
    if args.runtime == Runtime.KERAS or args.weights == "none":
        return args.weights, Runtime.KERAS
    from imgclassify.litert_build import default_cache_dir, describe_builds, ensure_build, weights_key

    cache = default_cache_dir()
    compiled: list[bool] = []
    with native_output_silenced(not getattr(args, "verbose", False)) as terminal:
        def announce() -> None:
            compiled.append(True)
            print(f"compiling {args.model} for LiteRT, the fast runtime (first run only, a minute or two; cached "
                  f"in {cache}): int8 where it agrees with the Keras model on half of your photos (50 or more "
                  "needed to check it), else fp32...", file=terminal, flush=True)

        artifact = ensure_build(args.model, args.weights, [photos] if photos else [], cache, on_first_build=announce)
    if compiled:
        print(describe_builds(cache, weights_key(args.model, args.weights)), file=sys.stderr, flush=True)
    if artifact is None:
        if args.runtime == Runtime.LITERT:
            raise UsageError("no LiteRT build of these weights passed the accuracy guard; use --runtime keras")
        return args.weights, Runtime.KERAS
    return str(artifact), Runtime.LITERT


def configured_detector() -> str | None:
    """DETECTOR_MODEL: a path, "" for none (`none`), or None when it is not set."""
    configured = os.environ.get("DETECTOR_MODEL", "")
    return None if not configured else "" if configured == "none" else configured


def choose_detector(args: argparse.Namespace, needed: bool) -> str:
    """The object detector's file when the job's classes need it (people, horses…; any class for serve, which
    does not know its jobs yet): DETECTOR_MODEL, or the cached build, made on first use. A build that cannot be
    made (no npm here) is said in one line, and the classifier answers alone."""
    configured = configured_detector()
    if configured is not None or not needed:
        return configured or ""
    from common.domain.errors import ConfigurationError
    from imgclassify.detector_build import ensure_detector

    with native_output_silenced(not getattr(args, "verbose", False)) as terminal:
        def announce() -> None:
            print("building the object detector for people, horses and COCO's other classes (first run only, "
                  "a minute; cached)...", file=terminal, flush=True)

        try:
            return str(ensure_detector(on_build=announce))
        except ConfigurationError as exc:
            print(f"imgclassify: the object detector is not available ({exc}): its classes are matched by the "
                  "classifier alone", file=terminal, flush=True)
            return ""


def model_name(settings: object) -> str:
    """How the terminal names the build in use: runtime:model:weights file."""
    from common.bootstrap import model_config

    config = model_config(settings)  # type: ignore[arg-type]
    return f"{config.effective_runtime}:{config.model}:{os.path.basename(config.weights)}"
