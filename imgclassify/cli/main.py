"""The `imgclassify` entry point: the parser of every command, and exit codes (0 done, 1 the job did not finish
or a service failed, 2 a usage error or a request the service refuses, 130 interrupted)."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence

from common.domain.errors import ClientError, ConfigurationError, ServiceError
from imgclassify.cli.commands import COMMANDS
from imgclassify.cli.options import EXAMPLES, UsageError
from imgclassify.cli.output import PrintableStream

DESCRIPTION = """`imgclassify`: sort a local folder (run, watch), serve the old HTTP API over it (serve), look at its
jobs (status, report, jobs, undo), or run the whole serverless pipeline on the emulators (emulate)."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imgclassify")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgclassify", description=DESCRIPTION, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"imgclassify {_version()}")
    parser.add_argument("--verbose", action="store_true",
                        help="also print the structured log and TensorFlow's own messages on the terminal")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(commands.add_parser(name, help=module.HELP, epilog=EXAMPLES,
                                                 formatter_class=argparse.RawDescriptionHelpFormatter))
    return parser


def _quiet_frameworks() -> None:
    """TensorFlow, absl and gRPC chatter says nothing a user acts on: off unless --verbose."""
    for name, value in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("GRPC_VERBOSITY", "ERROR"), ("GLOG_minloglevel", "2"),
                        ("ABSL_MIN_LOG_LEVEL", "3"), ("LITERT_QUIET", "1")):  # common/inference/native.py
        os.environ.setdefault(name, value)
    import warnings

    warnings.filterwarnings("ignore", module="tensorflow")
    warnings.filterwarnings("ignore", module="keras")


def main(argv: Sequence[str] | None = None) -> int:
    saved = sys.stdout, sys.stderr
    # Not a TextIO subclass on purpose: every attribute but write (isatty, fileno, encoding) is the real stream's.
    sys.stdout, sys.stderr = PrintableStream(sys.stdout), PrintableStream(sys.stderr)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = saved


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        _quiet_frameworks()
    # Ctrl-C must stop cleanly even when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return COMMANDS[args.command].execute(args)
    except (UsageError, ConfigurationError, ClientError) as exc:
        message = exc.message if isinstance(exc, ClientError) else str(exc)
        suggestions = exc.details.get("suggestions") if isinstance(exc, ClientError) else None
        if isinstance(suggestions, list) and suggestions:
            message += f" — did you mean {' or '.join(str(s) for s in suggestions)}?"
        print(f"imgclassify: error: {message}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"imgclassify: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
