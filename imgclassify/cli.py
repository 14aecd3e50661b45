"""`imgclassify`: sort a local folder (run), serve the old HTTP API over it (serve), show a job (status), or run
the whole serverless pipeline on the emulators (emulate)."""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.config import Settings
from common.domain.errors import ClientError, ConfigurationError, ServiceError
from common.domain.options import Backend, MatchMode, Model, Runtime, choices

if TYPE_CHECKING:
    from common.bootstrap import LocalApp

DEFAULT_WEIGHTS = "imagenet"  # Keras downloads ImageNet weights on first use (needs internet)


class UsageError(Exception):
    """A problem the user fixes by changing the command line: printed as one line, exit code 2."""


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=os.environ.get("MODEL", Model.RESNET50.value),
                        help=f"one of {', '.join(choices(Model))} (default: resnet50)")
    parser.add_argument("--weights", default=os.environ.get("MODEL_WEIGHTS", DEFAULT_WEIGHTS),
                        help="weights file (.weights.h5/.h5 for Keras, .tflite for LiteRT); default 'imagenet' "
                             "lets Keras download them, which needs internet")
    parser.add_argument("--runtime", default="auto", choices=["auto", *choices(Runtime)],
                        help="auto (default): the fastest LiteRT build that passed the accuracy guard, compiled "
                             "and cached on first use; keras: TensorFlow, the reference")
    parser.add_argument("--workers", type=int, default=2, help="images classified at once (default 2)")


def _add_job_options(parser: argparse.ArgumentParser, with_match: bool = True) -> None:
    parser.add_argument("--top-k", type=int, default=5, help="labels considered per image (default 5)")
    parser.add_argument("--min-score", type=float, default=None,
                        help="probability mass needed to match (default: the tuned value of the match rule)")
    if not with_match:  # a server's default thresholds; each job chooses its own match rule
        return
    parser.add_argument("--match", default=MatchMode.HIERARCHY.value, choices=choices(MatchMode),
                        help="hierarchy (default): the class's meaning in WordNet; label: an exact top-k label; "
                             "substring: the old service's rule")


EXAMPLES = """examples:
  imgclassify run ~/Pictures/trip --classes dogs cats food       # sorts ~/Pictures/trip/all/** into dogs/ cats/ food/
  imgclassify run ~/Pictures/trip --classes terriers --dry-run   # try a class: no copy made, answers from the store
  imgclassify report ~/Pictures/trip                             # the results page of the latest job
  imgclassify undo ~/Pictures/trip                               # remove the copies the latest job made
  imgclassify run ~/Phone --out ~/Sorted --classes people        # any folder, no all/ needed
  imgclassify watch ~/Dropbox/photos --classes dogs              # sort photos as they land in all/
  imgclassify serve ~/Pictures/trip --port 8080                  # the HTTP API (and pages at /)

DIR is a folder whose all/ holds the photos; copies go to DIR/<class>/, state to DIR/.imgclassify/."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imgclassify")
    except PackageNotFoundError:
        return "unknown"


def _command(commands: Any, name: str, help: str) -> argparse.ArgumentParser:  # noqa: A002 - argparse's name
    return commands.add_parser(name, help=help, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgclassify", description=__doc__, epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"imgclassify {_version()}")
    parser.add_argument("--verbose", action="store_true",
                        help="also print the structured log and TensorFlow's own messages on the terminal")
    commands = parser.add_subparsers(dest="command", required=True)

    run = _command(commands, "run", help="sort DIR/all/** into DIR/<class>/ (copies; originals stay)")
    run.add_argument("dir", type=Path, help="the folder whose all/ holds the photos (or, with --out, the photos)")
    run.add_argument("--classes", nargs="+", required=True, metavar="CLASS")
    run.add_argument("--out", type=Path, help="sort the photos in DIR itself (no all/ needed) into this folder")
    _add_model_options(run)
    _add_job_options(run)
    run.add_argument("--json", action="store_true", help="print the final job status object instead of a table")
    run.add_argument("--dry-run", action="store_true",
                     help="the whole job (counts, matches, per-photo results) without making any copy")
    run.add_argument("--callback-url", help="POST the final status here when the job completes")

    serve = _command(commands, "serve", help="serve POST /classification-job and GET /classification-job/<id>")
    serve.add_argument("dir", type=Path)
    serve.add_argument("--port", type=_port, default=8080)
    serve.add_argument("--max-queued", type=int, default=20_000,
                       help="images waiting to be classified beyond which new jobs get 429 (default 20000)")
    _add_model_options(serve)
    _add_job_options(serve, with_match=False)

    status = _command(commands, "status", help="print a job's status (the latest job without JOB_ID)")
    status.add_argument("dir", type=Path)
    status.add_argument("job_id", nargs="?")
    status.add_argument("--json", action="store_true", help="the raw status object, as the HTTP API returns it")

    watch = _command(commands, "watch", help="sort DIR/all/ now and every photo that lands there later, until "
                                              "Ctrl-C")
    watch.add_argument("dir", type=Path, help="the folder whose all/ receives the photos")
    watch.add_argument("--classes", nargs="+", required=True, metavar="CLASS")
    watch.add_argument("--callback-url", help="POST the final status here when the job completes (signed with "
                                              "SERVICE_KEY when set)")
    watch.add_argument("--json", action="store_true", help="print the final job status object instead of a table")
    _add_model_options(watch)
    _add_job_options(watch)

    report = _command(commands, "report", help="write a job's results page (one HTML file with previews) or its "
                                                "per-photo results as CSV / JSON Lines")
    report.add_argument("dir", type=Path)
    report.add_argument("job_id", nargs="?")
    report.add_argument("--out", help="where to write it (default DIR/report-<job>.<format>; - for stdout)")
    report.add_argument("--format", default="html", choices=["html", "csv", "jsonl"])
    report.add_argument("--photos", type=Path, help="where the photos are when the job was run with --out")

    undo = _command(commands, "undo", help="remove the copies a job made (the latest job without JOB_ID)")
    undo.add_argument("dir", type=Path)
    undo.add_argument("job_id", nargs="?")
    undo.add_argument("--json", action="store_true")

    jobs = _command(commands, "jobs", help="list the folder's jobs")
    jobs.add_argument("dir", type=Path)
    jobs.add_argument("--json", action="store_true")

    emulate = _command(commands, "emulate", help="run the serverless pipeline on the local emulators")
    emulate.add_argument("--port", type=_port, default=8080, help="port serving the two API paths")
    emulate.add_argument("--upload", type=Path, help="upload this folder's files under all/ in the bucket")
    emulate.add_argument("--keep", action="store_true", help="keep the emulators' folder (logs, bucket) on exit")
    _add_model_options(emulate)
    _add_job_options(emulate, with_match=False)
    return parser


def _choose_weights(args: argparse.Namespace, photos: Path | None) -> tuple[str, Runtime]:
    """(weights, runtime): a cached LiteRT build that passed the guard, compiling one on first use."""
    if args.weights.endswith(".tflite"):
        return args.weights, Runtime.LITERT
    if args.runtime == Runtime.KERAS or args.weights == "none":
        return args.weights, Runtime.KERAS
    from imgclassify.litert_build import default_cache_dir, describe_builds, ensure_build, weights_key

    cache = default_cache_dir()
    compiled: list[bool] = []

    def announce() -> None:
        compiled.append(True)
        _say(f"compiling {args.model} for LiteRT, the fast runtime (first run only, a minute or two; cached in "
             f"{cache}): int8, checked against the Keras model on half of your photos...")

    with _native_output_silenced(not getattr(args, "verbose", False)):
        artifact = ensure_build(args.model, args.weights, [photos] if photos else [], cache,
                                on_first_build=announce)
    if compiled:
        print(describe_builds(cache, weights_key(args.model, args.weights)), file=sys.stderr, flush=True)
    if artifact is None:
        if args.runtime == Runtime.LITERT:
            raise UsageError("no LiteRT build of these weights passed the accuracy guard; use --runtime keras")
        return args.weights, Runtime.KERAS
    return str(artifact), Runtime.LITERT


@contextlib.contextmanager
def _native_output_silenced(silence: bool) -> Iterator[None]:
    """TensorFlow's converter and LiteRT print from native code ("fully_quantize: 0 …", "Created TensorFlow Lite
    XNNPACK delegate"), past Python's logging: point file descriptors 1 and 2 at /dev/null while they work. Our own
    lines go to a saved copy of the terminal's stderr meanwhile."""
    global _terminal
    if not silence:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    devnull = os.open(os.devnull, os.O_WRONLY)
    previous = _terminal
    _terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1)
    try:
        for fd in (1, 2):
            os.dup2(devnull, fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)
        _terminal.close()
        _terminal = previous


_terminal: Any = None  # where our own progress lines go while native output is silenced


def _say(text: str) -> None:
    print(text, file=_terminal or sys.stderr, flush=True)


def _check_model_options(args: argparse.Namespace) -> None:
    if args.model not in choices(Model):
        raise UsageError(f"unknown model {args.model!r}: choose one of {', '.join(choices(Model))}")
    args.model = Model(args.model)
    if args.weights not in ("imagenet", "none") and not Path(args.weights).is_file():
        raise UsageError(f"weights file not found: {args.weights}")
    if args.weights not in ("imagenet", "none"):
        # The model may never load (every photo known to the prediction store): check the file's kind now.
        with open(args.weights, "rb") as handle:
            head = handle.read(8)
        tflite, hdf5 = head[4:8] == b"TFL3", head == b"\x89HDF\r\n\x1a\n"
        if not (tflite or hdf5):
            raise UsageError(f"cannot load {args.weights}: neither a LiteRT .tflite model nor a Keras .h5 file")
    if args.workers < 1:
        raise UsageError(f"--workers must be at least 1, got {args.workers}")


def _settings(args: argparse.Namespace, root: Path, photos: Path) -> Settings:
    weights, runtime = _choose_weights(args, photos)
    return Settings(backend=Backend.LOCAL, local_root=str(root), local_photos=str(photos), model=args.model,
                    weights=weights, runtime=runtime, bucket="local", service_key=os.environ.get("SERVICE_KEY", ""),
                    default_top_k=args.top_k, default_min_score=args.min_score,
                    # A local user's own webhook on this machine is theirs to call; private networks only where
                    # they say so, as an operator would.
                    callback_allow_loopback=True,
                    callback_allow_private=os.environ.get("CALLBACK_ALLOW_PRIVATE", "") in ("1", "true", "yes"))


def _quiet_logs(root: Path, verbose: bool = False) -> None:
    """Send the structured logs to DIR/.imgclassify/log.jsonl (and, with --verbose, the terminal too)."""
    from common.adapters.local import STATE_DIR
    from common.logs import CloudLoggingFormatter, get_logger

    get_logger("cli")
    state = root / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(state / "log.jsonl")
    handler.setFormatter(CloudLoggingFormatter())
    logger = logging.getLogger("imgclassify")
    terminal = [h for h in logger.handlers if isinstance(h, logging.StreamHandler) and
                not isinstance(h, logging.FileHandler)] if verbose else []
    logger.handlers[:] = [handler, *terminal]
    logger.setLevel(logging.DEBUG)


def _port(raw: str) -> int:
    port = int(raw)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{raw} is not a port (1 to 65535)")
    return port


def _folders(args: argparse.Namespace) -> tuple[Path, Path]:
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


class Progress:
    """One line on stderr: done/total, rate, ETA. Only on a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.start = time.monotonic()
        self.first_done: int | None = None

    def show(self, view: dict[str, Any]) -> None:
        if not self.enabled:
            return
        total, done = view["number_of_files"], view["processed"] + view["failed"]
        if self.first_done is None:
            self.first_done = done
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = (done - self.first_done) / elapsed
        eta = f"{(total - done) / rate:5.0f}s" if rate > 0 else "    ?"
        width = 30
        filled = int(width * done / total) if total else width
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} "
                         f"{rate:6.1f} img/s  ETA {eta} ")
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _table(view: dict[str, Any]) -> str:
    rows = [(name, count) for name, count in view["matches"].items()]
    rows += [("(no class)", view["unmatched"]), ("(failed)", view["failed"])]
    width = max(len(name) for name, _ in rows)
    lines = [f"{'class'.ljust(width)}  images", f"{'-' * width}  ------"]
    lines += [f"{name.ljust(width)}  {count:6d}" for name, count in rows]
    lines.append(f"{view['number_of_files']} images, {view['processed']} classified, {view['failed']} failed")
    return "\n".join(lines)


def _summary(view: dict[str, Any], written: int) -> str:
    """Where the answers came from and what changed on disk, in one line."""
    done = view["processed"] + view["failed"]
    from_model = view["processed"] - view["from_store"]
    line = f"predictions: {view['from_store']} from the store, {from_model} from the model"
    if view.get("dry_run"):
        return line + "; dry run: no copy made"
    line += f"; {written} new copies"
    if done and from_model == 0 and written == 0:
        line += " — nothing new"
    return line


def _find_resumable(app: LocalApp, spec_body: dict[str, Any]) -> str | None:
    from common.domain.jobs import parse_job_request

    job_id = app.jobs.latest_job_id()
    if job_id is None:
        return None
    job = app.jobs.get_job(job_id)
    wanted = parse_job_request(spec_body, app.settings.job_defaults).spec
    if job is None or job.spec != wanted:
        return None
    if not app.job_status(job_id)["complete"]:
        return job_id
    retryable = any(not result.ok and result.retryable for result in app.jobs.results(job_id))
    return job_id if retryable else None


def _interrupt(*_: object) -> None:
    """SIGTERM stops like Ctrl-C: finish the images in hand, record them, exit resumable."""
    raise KeyboardInterrupt


def _embedded_app(args: argparse.Namespace, load_model: bool) -> tuple[LocalApp, str]:
    """The folder's use cases, and which model build they use. The model itself loads on the first photo the
    prediction store does not know (a job over known photos never imports TensorFlow or LiteRT); `load_model`
    loads it now, so a weights problem fails before anything else (serve, and Keras' own downloads)."""
    from common.bootstrap import build_local, model_config

    root, photos = _folders(args)
    _check_model_options(args)
    _lock_folder(root, args.command)
    _quiet_logs(root, args.verbose)
    app = build_local(_settings(args, root, photos), workers=args.workers)
    if load_model or args.weights == "imagenet":
        app.load_model()
    config = model_config(app.settings)
    return app, f"{config.effective_runtime}:{config.model}:{os.path.basename(config.weights)}"


_held_locks: list[Any] = []  # held until the process ends, when the kernel drops them


def _lock_folder(root: Path, command: str) -> None:
    """One writer per folder: a second run, watch, serve or undo is refused with the holder's pid and command."""
    from common.adapters.local import STATE_DIR, FolderLock

    _held_locks.append(FolderLock(root / STATE_DIR, command).acquire())


def _check_request(body: dict[str, Any]) -> None:
    """A misspelled class is a one-line error before anything slow (a model build) starts."""
    from common.domain.jobs import JobDefaults, parse_job_request
    from common.domain.taxonomy import describe_resolution

    spec = parse_job_request(body, JobDefaults(bucket="local")).spec
    describe_resolution(spec.classes, spec.match)


def command_run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"classes": args.classes, "top_k": args.top_k, "match": args.match}
    if args.dry_run:
        body["dry_run"] = True
    if args.callback_url:
        body["callback_url"] = args.callback_url
    if args.min_score is not None:
        body["min_score"] = args.min_score
    _check_request(body)
    app, model = _embedded_app(args, load_model=False)
    queue = app.queue
    resumable = _find_resumable(app, body)
    resumed: dict[str, int] | None = None
    progress = Progress(sys.stderr.isatty() and not args.json)
    job_id = resumable
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if resumable:
            if not args.json:
                print(f"resuming job {job_id}", file=sys.stderr)
            already_done, published = app.resume_job(resumable)
            resumed = {"already_done": already_done, "published": published}
        else:
            job_id = app.create_job(body)["id"]
        while not queue.join(timeout=0.2):
            progress.show(app.job_status(job_id))
    except KeyboardInterrupt:
        progress.end()
        print("stopping: finishing the images in progress...", file=sys.stderr)
        queue.shutdown(cancel=True)
        if job_id is None:
            print("interrupted while listing the photos. Run the same command again to resume.", file=sys.stderr)
            return 130
        view = app.job_status(job_id)
        print(f"interrupted: {view['processed'] + view['failed']} of {view['number_of_files']} images done. "
              f"Run the same command again to resume job {job_id}.", file=sys.stderr)
        return 130
    view = app.job_status(job_id)
    progress.show(view)
    progress.end()
    queue.shutdown()
    view["model"] = model
    written = sum(len(result.written) for result in app.jobs.results(job_id))
    view["copies_written"] = written
    if resumed is not None:
        view["resumed"] = resumed
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        print(_meanings(view))
        print(_table(view))
        print(_summary(view, written))
        if view["failed"]:
            print(f"failed images and reasons: imgclassify status {app.settings.local_root} {job_id}",
                  file=sys.stderr)
    _send_callbacks(view)
    if view.get("errors"):
        print(f"imgclassify: error: {view['errors'][0]}", file=sys.stderr)
        return 2
    if not view["complete"]:
        reason = view.get("error") or f"{view['remaining']} images were neither classified nor failed"
        print(f"imgclassify: job {job_id} did not complete: {reason}", file=sys.stderr)
        return 1
    return 0


CALLBACK_WAIT_SECONDS = 30.0  # what an exiting run gives its completion callback (sent in the background)


def _send_callbacks(view: dict[str, Any]) -> None:
    if not view.get("callback_url"):
        return
    from common.bootstrap import background_workers

    if not background_workers().drain(CALLBACK_WAIT_SECONDS):
        print(f"imgclassify: the completion callback was not answered within {CALLBACK_WAIT_SECONDS:.0f} s; "
              "not waiting longer", file=sys.stderr)


def _resume_unfinished(app: LocalApp) -> list[str]:
    """Jobs an earlier serve left running (stopped or killed): publish their images without a result again."""
    resumed = []
    for job_id in app.jobs.job_ids():
        view = app.job_status(job_id)
        if not view["complete"] and "error" not in view:
            app.resume_job(job_id)
            resumed.append(job_id)
    return resumed


def command_serve(args: argparse.Namespace) -> int:
    from common.domain.errors import Overloaded
    from common.http import create_app
    from imgclassify.http_server import create_server

    app, _ = _embedded_app(args, load_model=True)
    root = args.dir.resolve()

    def create_job_when_there_is_room(body: object) -> dict[str, Any]:
        # Bounded work in flight: a flood of jobs is told to come back instead of queueing without limit.
        queued = app.queue.backlog()
        if queued >= args.max_queued:
            raise Overloaded(f"{queued} images are waiting to be classified (limit {args.max_queued}); retry later",
                             retry_after=max(1, min(60, queued // 100)))
        return app.create_job(body)

    resumed = _resume_unfinished(app)
    # waitress: the ecosystem's pure-Python production WSGI server. It reads each request whole before a worker
    # thread sees it (a slow client holds a socket, never a thread), closes idle connections after
    # channel_timeout, and caps open connections.
    def index() -> str:
        from common.report import render_index

        return render_index(app.job_status(job_id) for job_id in app.jobs.job_ids())

    server = create_server(create_app(create_job_when_there_is_room, app.job_status, app.settings, app.undo_job,
                                      app.close_job, app.report, index),
                           port=args.port, connection_limit=200, max_body_bytes=app.settings.max_body_bytes)
    if resumed:
        print(f"resuming {len(resumed)} unfinished job(s): {', '.join(resumed)}", file=sys.stderr)
    print(f"serving {root} on http://127.0.0.1:{server.effective_port}  (POST /classification-job, "
          f"GET /classification-job/<id>); Ctrl-C stops", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        app.queue.shutdown(cancel=True)
    return 0


def command_status(args: argparse.Namespace) -> int:
    from common.usecases.job_status import JobStatus

    _, jobs, job_id = _folder_job(args)
    view = JobStatus(jobs)(job_id)
    view["failures"] = [{"name": r.name, "reason": r.reason} for r in jobs.results(job_id) if not r.ok]
    if args.json:
        print(json.dumps(view, indent=2))
        return 0
    done = view["processed"] + view["failed"]
    print(f"job {job_id} ({view['created_at'][:19]}): {view['state']}, {done} of {view['number_of_files']} photos "
          f"({view['percentage']}%)")
    print(_meanings(view))
    print(_table(view))
    for failure in view["failures"]:
        print(f"  failed {failure['name']}: {failure['reason']}")
    print(f"results page: imgclassify report {args.dir} {job_id}")
    return 0


def _meanings(view: dict[str, Any]) -> str:
    """What each class was taken to mean, and the warnings, in plain words."""
    lines = []
    for query, meaning in view.get("resolved", {}).items():
        lines.append(f"  {query}: " + ("; ".join(meaning) if meaning else "matches nothing in ImageNet"))
    lines += [f"  warning: {warning}" for warning in view.get("warnings", []) + view.get("errors", [])]
    if view.get("match") and view["match"] != "hierarchy":
        lines.append(f"  match rule: {view['match']} (min score {view['min_score']})")
    return "\n".join(lines) if lines else "  (no class resolution for this match rule)"


def _function_env(args: argparse.Namespace, weights: str, runtime: Runtime) -> dict[str, str]:
    """What the three functions get: the same model options `run` and `serve` take."""
    env = {"MODEL": args.model.value, "MODEL_WEIGHTS": weights, "MODEL_RUNTIME": runtime.value,
           "THREADS": str(args.workers), "DEFAULT_TOP_K": str(args.top_k)}
    if args.min_score is not None:
        env["DEFAULT_MIN_SCORE"] = str(args.min_score)
    return env


def _report_progress(store: Any, shown: dict[str, str]) -> None:
    """One line per job whose progress changed since the last look."""
    from common.usecases.job_status import JobStatus

    status = JobStatus(store)
    for job_id in store.recent_job_ids(5):
        view = status(job_id)
        done = view["processed"] + view["failed"]
        line = (f"job {job_id}: {view['state']} {done}/{view['number_of_files']} "
                f"({view['percentage']}%)  " + ", ".join(f"{c} {n}" for c, n in view["matches"].items()))
        if view["state"] == "complete":
            line += f"  — copies under gs://{view['bucket']}/<class>/"
        for error in view.get("errors", []):
            line += f"\n  error: {error}"
        if shown.get(job_id) != line:
            shown[job_id] = line
            print(line, file=sys.stderr, flush=True)


def command_emulate(args: argparse.Namespace) -> int:
    import shutil

    from common.inference.classifier import ModelConfig
    from common.inference.loader import load_classifier
    from imgclassify.emulation import Emulators, LocalStack, _environ

    _check_model_options(args)
    if args.weights not in ("imagenet", "none"):
        args.weights = str(Path(args.weights).resolve())  # the functions run elsewhere: paths are the user's
    if args.upload is not None and not args.upload.is_dir():
        raise UsageError(f"--upload {args.upload} is not a folder")
    weights, runtime = _choose_weights(args, args.upload.resolve() if args.upload else None)
    # The model must load before anything says "pipeline up": a wrong file is one line here, not a silent hang.
    logging.getLogger("imgclassify").setLevel(logging.WARNING)
    model = load_classifier(ModelConfig(args.model, weights, runtime)).description
    emulators = Emulators().start()
    stack = LocalStack(emulators, gateway_port=args.port, function_env=_function_env(args, weights, runtime))
    try:
        try:
            stack.start()
        except RuntimeError as exc:
            raise UsageError(f"the functions did not start: {str(exc).splitlines()[-1]} (logs: "
                             f"{emulators.log_dir})") from None
        from google.cloud import firestore

        from common.adapters.gcp import FirestoreJobStore, GcsObjectStore, storage_client
        from common.config import Settings

        with _environ(emulators.env):
            if args.upload:
                store = GcsObjectStore(storage_client(emulators.project))
                files = [p for p in sorted(args.upload.rglob("*")) if p.is_file()]
                for path in files:
                    store.write(stack.bucket, f"all/{path.relative_to(args.upload).as_posix()}", path.read_bytes())
                print(f"uploaded {len(files)} files under gs://{stack.bucket}/all/", file=sys.stderr)
            jobs = FirestoreJobStore(firestore.Client(project=emulators.project), Settings.jobs_collection,
                                     Settings.counter_shards)
        print(f"pipeline up ({model}, {args.workers} at once): POST {stack.gateway_url}/classification-job, "
              f"GET {stack.gateway_url}/classification-job/<id>", file=sys.stderr)
        print("emulator environment (export to use the official clients against it):", file=sys.stderr)
        for key, value in {**emulators.env, "BUCKET": stack.bucket}.items():
            print(f"  export {key}={value}", file=sys.stderr)
        print(f"logs: {emulators.log_dir}; Ctrl-C stops everything", file=sys.stderr, flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        shown: dict[str, str] = {}
        while True:
            time.sleep(1)
            with _environ(emulators.env):
                _report_progress(jobs, shown)
    except KeyboardInterrupt:
        return 0
    finally:
        stack.stop()
        emulators.stop()
        if args.keep:
            print(f"kept {emulators.log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(emulators.log_dir, ignore_errors=True)


SETTLE_SECONDS = 1.0  # a file joins once its size and time have not changed for this long (still being written)
MAX_SETTLE_SECONDS = 300.0  # a file that keeps changing joins anyway after this long (bounded)


def command_watch(args: argparse.Namespace) -> int:
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    body: dict[str, Any] = {"classes": args.classes, "top_k": args.top_k, "match": args.match, "watch": True}
    if args.min_score is not None:
        body["min_score"] = args.min_score
    if args.callback_url:
        body["callback_url"] = args.callback_url
    _check_request(body)
    app, model = _embedded_app(args, load_model=False)
    photos = Path(app.settings.local_photos)
    # path -> ((size, mtime) last seen, when it last changed, when first seen)
    changed: dict[Path, tuple[tuple[int, int], float, float]] = {}

    class Changes(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.is_directory or event.event_type not in ("created", "modified", "moved", "closed"):
                return
            path = Path(getattr(event, "dest_path", "") or event.src_path)
            if not any(part.startswith(".") for part in path.relative_to(photos).parts):
                now = time.monotonic()
                changed.setdefault(path, ((-1, -1), now, now))

    observer = Observer()
    observer.schedule(Changes(), str(photos), recursive=True)
    observer.start()  # before the listing: nothing written meanwhile is missed (it is then seen twice, counted once)
    job = app.create_job(body)
    job_id = job["id"]
    print(f"watching {photos} (job {job_id}, {model}): {job['number_of_files']} photos there now; "
          "new ones are sorted as they land. Ctrl-C stops.", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, _interrupt)
    shown = ""
    try:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            for path, (seen, since, first) in list(changed.items()):
                try:
                    status = path.stat() if path.is_file() else None
                except OSError:
                    status = None
                current = None if status is None else (status.st_size, status.st_mtime_ns)
                if current is None:
                    changed.pop(path, None)  # gone, or not a regular file
                elif current != seen and now - first < MAX_SETTLE_SECONDS:
                    changed[path] = (current, now, first)
                elif now - since >= SETTLE_SECONDS or now - first >= MAX_SETTLE_SECONDS:
                    changed.pop(path, None)
                    app.object_arrived("local", "all/" + path.relative_to(photos).as_posix())
            view = app.job_status(job_id)
            line = (f"{view['processed'] + view['failed']}/{view['number_of_files']} sorted  "
                    + ", ".join(f"{c} {n}" for c, n in view["matches"].items()))
            if line != shown:
                shown = line
                print(line, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        observer.stop()
        observer.join(timeout=5)
    print("stopping: closing the job once the photos in hand are sorted...", file=sys.stderr, flush=True)
    app.close_job(job_id)
    app.queue.join()
    app.queue.shutdown()
    view = app.job_status(job_id)
    if args.json:
        print(json.dumps(view, indent=2))
    else:
        print(_table(view))
    return 0 if view["complete"] else 1


def _folder_jobs(args: argparse.Namespace) -> tuple[Path, Any]:
    from common.adapters.local import SqliteJobStore
    from common.bootstrap import local_db_path

    root = args.dir.resolve()
    db = local_db_path(root)
    if not db.exists():
        raise UsageError(f"no jobs in {root} yet: run `imgclassify run {args.dir} --classes ...` first")
    _quiet_logs(root, args.verbose)  # the structured log goes to its file: stdout is the command's answer
    return root, SqliteJobStore(db)


def _folder_job(args: argparse.Namespace) -> tuple[Path, Any, str]:
    """(DIR, its job store, the job named on the command line or else the latest one)."""
    root, jobs = _folder_jobs(args)
    job_id = args.job_id or jobs.latest_job_id()
    if job_id is None:
        raise UsageError(f"no jobs in {root} yet")
    return root, jobs, job_id


def command_report(args: argparse.Namespace) -> int:
    from common.adapters.local import FolderObjectStore
    from common.bootstrap import report_job

    root, jobs, job_id = _folder_job(args)
    photos = root / "all"
    objects = FolderObjectStore(root, sources={"all/": args.photos or photos})
    _, body = report_job(jobs, objects)(job_id, args.format)
    out = args.out or root / f"report-{job_id[:8]}.{args.format}"
    if str(out) == "-":
        sys.stdout.write(body)
        return 0
    _write_new_file(Path(out), body.encode("utf-8"))
    print(f"{out}  ({len(body.encode()) // 1024} KB; open it in a browser)" if args.format == "html" else str(out))
    return 0


def _write_new_file(path: Path, data: bytes) -> None:
    """Write a new file beside path, then rename it over path: whatever was at path (a link included) is
    replaced, never written through."""
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # O_CREAT | O_EXCL
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def command_undo(args: argparse.Namespace) -> int:
    from common.adapters.local import FolderObjectStore
    from common.usecases.undo_job import UndoJob

    root, jobs, job_id = _folder_job(args)
    _lock_folder(root, "undo")
    report = UndoJob(FolderObjectStore(root), jobs)(job_id)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"job {job_id}: removed {report['removed']} copies it made"
          + (f", {report['missing']} already gone" if report["missing"] else ""))
    for kept in report["kept"]:
        print(f"  kept {kept['name']}: {kept['reason']}")
    return 0


def command_jobs(args: argparse.Namespace) -> int:
    from common.usecases.job_status import JobStatus

    root, jobs = _folder_jobs(args)
    status = JobStatus(jobs)
    rows = []
    for job_id in jobs.job_ids():
        view = status(job_id)
        written = [name for result in jobs.results(job_id) for name in result.written]
        present = sum((root / name).is_file() for name in written)
        rows.append({"id": job_id, "created_at": view["created_at"], "classes": view["classes"],
                     "state": view["state"] + (" (dry run)" if view.get("dry_run") else ""),
                     "processed": view["processed"], "failed": view["failed"],
                     "number_of_files": view["number_of_files"], "copies_present": present,
                     "copies_made": len(written)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'job':32}  {'created':19}  {'state':18}  {'done':>9}  {'copies':>9}  classes")
    for row in rows:
        done = f"{row['processed'] + row['failed']}/{row['number_of_files']}"
        copies = f"{row['copies_present']}/{row['copies_made']}"
        print(f"{row['id']:32}  {row['created_at'][:19]:19}  {row['state']:18}  {done:>9}  {copies:>9}  "
              f"{', '.join(row['classes'])}")
    return 0


COMMANDS = {"run": command_run, "serve": command_serve, "status": command_status, "emulate": command_emulate,
            "undo": command_undo, "jobs": command_jobs, "watch": command_watch, "report": command_report}


def _quiet_frameworks() -> None:
    """TensorFlow, absl and gRPC chatter says nothing a user acts on: off unless --verbose."""
    for name, value in (("TF_CPP_MIN_LOG_LEVEL", "3"), ("GRPC_VERBOSITY", "ERROR"), ("GLOG_minloglevel", "2"),
                        ("ABSL_MIN_LOG_LEVEL", "3")):
        os.environ.setdefault(name, value)
    import warnings

    warnings.filterwarnings("ignore", module="tensorflow")
    warnings.filterwarnings("ignore", module="keras")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.verbose:
        _quiet_frameworks()
    # Ctrl-C must stop cleanly even when started from a shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return COMMANDS[args.command](args)
    except (UsageError, ConfigurationError, ClientError) as exc:
        message = exc.message if isinstance(exc, ClientError) else str(exc)
        suggestions = exc.details.get("suggestions") if isinstance(exc, ClientError) else None
        if suggestions:
            message += f" — did you mean {' or '.join(map(str, suggestions))}?"
        print(f"imgclassify: error: {message}", file=sys.stderr)
        return 2
    except ServiceError as exc:
        print(f"imgclassify: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
