"""Options several commands share (pip's cmdoptions), the request a command line makes, and the usage error."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common.domain.options import MatchMode, Model, Runtime, choices


EXAMPLES = """examples:
  imgclassify run ~/Pictures/trip --classes dogs cats food       # sorts ~/Pictures/trip/all/** into dogs/ cats/ food/
  imgclassify run ~/Pictures/trip --classes terriers --dry-run   # try a class: no copy made, answers from the store
  imgclassify report ~/Pictures/trip                             # the results page of the latest job
  imgclassify undo ~/Pictures/trip                               # remove the copies the latest job made
  imgclassify run ~/Phone --out ~/Sorted --classes people        # any folder, no all/ needed
  imgclassify watch ~/Dropbox/photos --classes dogs              # sort photos as they land in all/
  imgclassify serve ~/Pictures/trip --port 8080                  # the HTTP API (and pages at /)

DIR is a folder whose all/ holds the photos; copies go to DIR/<class>/, state to DIR/.imgclassify/."""


class UsageError(Exception):
    """A problem the user fixes by changing the command line: printed as one line, exit code 2."""


def port(raw: str) -> int:
    number = int(raw)
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"{raw} is not a port (1 to 65535)")
    return number


def add_model_options(parser: argparse.ArgumentParser) -> None:
    # No defaults here: a flag left out takes what the folder remembers, then MODEL / MODEL_WEIGHTS, then the
    # built-in default (imgclassify/cli/remembered.py).
    parser.add_argument("--model", help=f"one of {', '.join(choices(Model))} (default: what the folder was sorted "
                                        "with, else MODEL, else resnet50; a Keras weights file names its own)")
    parser.add_argument("--weights", help="weights file (.weights.h5/.h5 for Keras, .tflite for LiteRT); default: what "
                                          "the folder was sorted with, else MODEL_WEIGHTS, else 'imagenet' (Keras "
                                          "downloads them, which needs internet)")
    parser.add_argument("--runtime", choices=["auto", *choices(Runtime)],
                        help="auto (default): the fastest LiteRT build that passed the accuracy guard, compiled "
                             "and cached on first use; keras: TensorFlow, the reference")
    parser.add_argument("--workers", type=int, default=2, help="images classified at once (default 2)")


def add_job_options(parser: argparse.ArgumentParser, with_match: bool = True) -> None:
    # No defaults here either: what the folder remembers, then DEFAULT_TOP_K / DEFAULT_MIN_SCORE, then these.
    parser.add_argument("--top-k", type=int, help="labels considered per image (default: what the folder was "
                                                  "sorted with, else 5)")
    parser.add_argument("--min-score", type=float,
                        help="probability mass needed to match (default: what the folder was sorted with, else the "
                             "tuned value of the match rule)")
    if not with_match:  # a server's default thresholds; each job chooses its own match rule
        return
    add_examples_option(parser)
    parser.add_argument("--match", default=MatchMode.HIERARCHY.value, choices=choices(MatchMode),
                        help="hierarchy (default): the class's meaning in WordNet; label: an exact top-k label; "
                             "substring: the old service's rule")


def add_examples_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--examples", action="append", default=[], metavar="CLASS=FOLDER", type=example_folder,
                        help="teach CLASS by the photos in FOLDER (anywhere; at least 2): any word becomes a class "
                             "(roses, receipts, our cat); repeat for each class")


def add_folder(parser: argparse.ArgumentParser, job: bool = False) -> None:
    parser.add_argument("dir", type=Path, help="the folder whose all/ holds the photos")
    if job:
        parser.add_argument("job_id", nargs="?", help="the job (the latest one without it)")


EXAMPLES_PREFIX = "examples/"  # where a command line's example folders appear to the job: examples/<class>/


def example_folder(raw: str) -> tuple[str, Path]:
    name, equals, folder = raw.partition("=")
    if not equals or not name.strip() or not folder:
        raise argparse.ArgumentTypeError(f"{raw!r} is not CLASS=FOLDER (such as roses=~/examples/roses)")
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{folder} is not a folder")
    return name.strip(), path


def example_sources(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """Each --examples folder as the prefix the job reads it under."""
    return tuple((f"{EXAMPLES_PREFIX}{name}/", str(folder)) for name, folder in getattr(args, "examples", []))


def with_taught_classes(body: object, args: argparse.Namespace) -> object:
    """A served request naming a class `serve --examples` taught, without examples of its own for it, is taught by
    the served folder (under examples/<class>/, as a command line's)."""
    taught = {name: f"{EXAMPLES_PREFIX}{name}/" for name, _ in getattr(args, "examples", [])}
    if not taught or not isinstance(body, dict) or not isinstance(body.get("classes"), list):
        return body
    own = body.get("examples", {})
    if not isinstance(own, dict):
        return body  # the request's own mistake: its 400 names the field
    added = {name: prefix for name, prefix in taught.items() if name in body["classes"] and name not in own}
    return {**body, "examples": {**own, **added}} if added else body


def job_request(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """The create-job body a command line asks for: the same request the HTTP API takes."""
    body: dict[str, Any] = {"classes": args.classes, "top_k": args.top_k, "match": args.match, **extra}
    if getattr(args, "examples", None):
        body["examples"] = {name: f"{EXAMPLES_PREFIX}{name}/" for name, _ in args.examples}
    if args.min_score is not None:
        body["min_score"] = args.min_score
    if getattr(args, "callback_url", None):
        body["callback_url"] = args.callback_url
    return body


def check_request(body: dict[str, Any]) -> None:
    """A misspelled class is a one-line error before anything slow (a model build) starts."""
    from common.domain.jobs import JobDefaults
    from common.domain.requests import parse_job_request
    from common.domain.taxonomy import describe_resolution

    spec = parse_job_request(body, JobDefaults(bucket="local")).spec
    describe_resolution(spec.classes, spec.match, taught=spec.taught)
