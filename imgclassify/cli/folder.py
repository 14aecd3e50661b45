"""The folder a command works on: where the photos are and where copies go, its use cases (one writer at a time),
its log file."""
from __future__ import annotations

import argparse
import dataclasses
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

from common import bootstrap
from common.config import Settings
from common.domain.options import Backend
from common.logs import CloudLoggingFormatter, get_logger
from imgclassify.cli.model import (check_model_options, choose_detector, choose_weights, configured_detector,
                                   model_name)
from imgclassify.cli.options import UsageError, example_sources
from imgclassify.cli.remembered import remember


def folders(args: argparse.Namespace) -> tuple[Path, Path]:
    """(root: where copies and state go, photos: the folder sorted)."""
    out = getattr(args, "out", None)
    if out is None:
        root = args.dir.resolve()
        photos = root / "all"
        if not photos.is_dir():
            raise UsageError(f"{photos} not found: put the photos to sort under {root}/all/, or sort any folder "
                             f"with `imgclassify run PHOTOS --out SORTED`")
        return root, photos
    photos, root = args.dir.resolve(), out.resolve()
    if not photos.is_dir():
        raise UsageError(f"{args.dir} is not a folder of photos")
    if root.is_relative_to(photos):
        raise UsageError(f"--out {out} is inside {args.dir}: the copies would be sorted again next time; "
                         "choose a folder outside it")
    root.mkdir(parents=True, exist_ok=True)
    return root, photos


class FolderLogHandler(logging.StreamHandler):
    """The structured log of a folder's command, appended to DIR/.imgclassify/log.jsonl (its own open file)."""


def log_to_file(root: Path, verbose: bool = False) -> None:
    """Send the structured logs to DIR/.imgclassify/log.jsonl (and, with --verbose, the terminal too): stdout is
    the command's answer."""
    get_logger("cli")
    handler = FolderLogHandler(bootstrap.log_stream(root))
    handler.setFormatter(CloudLoggingFormatter())
    logger = logging.getLogger("imgclassify")
    for old in logger.handlers:
        if isinstance(old, FolderLogHandler):
            old.stream.close()  # an earlier command's log file, in the same process
    terminal = [h for h in logger.handlers if not isinstance(h, FolderLogHandler)] if verbose else []
    logger.handlers[:] = [handler, *terminal]
    logger.setLevel(logging.DEBUG)


@contextlib.contextmanager
def embedded_app(args: argparse.Namespace, load_model: bool) -> Iterator[tuple[bootstrap.LocalApplication, str]]:
    """The folder's use cases, held by this command alone while it runs, and which model build they use. The model
    loads on the first photo the prediction store does not know (a job over known photos never imports TensorFlow
    or LiteRT); `load_model` loads it now, so a weights problem fails before anything else (serve, and Keras' own
    downloads)."""
    root, photos = folders(args)
    check_model_options(args, root)
    lock = bootstrap.lock_folder(root, args.command)
    try:
        log_to_file(root, args.verbose)
        weights, runtime = choose_weights(args, photos)
        detector = choose_detector(args, needed=_needs_detector(args))
        # The one settings model: the environment as a cloud instance reads it (SERVICE_KEY,
        # CALLBACK_ALLOW_PRIVATE, ALLOWED_HOSTS…), under what this command resolved from its flags and the folder.
        settings = dataclasses.replace(
            Settings.from_env(), backend=Backend.LOCAL, local_root=str(root), local_photos=str(photos),
            local_sources=example_sources(args), model=args.model, weights=weights, runtime=runtime, bucket="local",
            default_top_k=args.top_k, default_min_score=args.min_score, detector_model=detector,
            # A local user's own webhook on this machine is theirs to call; private networks only where they say
            # so, as an operator would.
            callback_allow_loopback=True)
        app = bootstrap.local_app(settings, workers=args.workers)
        if load_model or args.weights == "imagenet":
            app.load_model()
        remember(args, root)
        yield app, model_name(settings)
    finally:
        lock.release()


def _built_detector() -> str:
    """What a folder's jobs were sorted with, as far as this machine knows: DETECTOR_MODEL or the cached build."""
    from imgclassify.detector_build import cached_detector

    configured = configured_detector()
    return configured if configured is not None else str(cached_detector() or "")


def _needs_detector(args: argparse.Namespace) -> bool:
    from common.domain.options import MatchMode
    from common.domain.taxonomy import needs_detector

    if not hasattr(args, "classes"):  # serve: its jobs are not known yet
        return True
    return needs_detector(tuple(args.classes), MatchMode(getattr(args, "match", MatchMode.HIERARCHY)))


@contextlib.contextmanager
def existing_folder(args: argparse.Namespace, writer: bool = False) -> Iterator[bootstrap.LocalApplication]:
    """The use cases of a folder that already has jobs (status, report, undo, jobs); a writer holds the lock."""
    root = args.dir.resolve()
    if not bootstrap.has_jobs(root):
        raise UsageError(f"no jobs in {root} yet: run `imgclassify run {args.dir} --classes ...` first")
    lock = bootstrap.lock_folder(root, args.command) if writer else None
    try:
        log_to_file(root, args.verbose)
        yield bootstrap.folder_app(root, getattr(args, "photos", None), _built_detector())
    finally:
        if lock is not None:
            lock.release()
