"""`imgclassify emulate`: the serverless pipeline on the official emulators, the functions under
functions-framework, one gateway port for the old paths; progress shown until Ctrl-C."""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from common.domain.options import MatchMode, Runtime, choices
from common.routes import LOOPBACK_HOSTS
from imgclassify.cli import dotenv
from imgclassify.cli.bucket_mount import BucketMount, mount_bucket
from imgclassify.cli.commands.serve import key_line
from imgclassify.cli.model import check_model_options, choose_detector, choose_weights
from imgclassify.cli.options import UsageError, add_job_options, add_model_options, port
from imgclassify.cli.output import progress_line
from imgclassify.cli.signals import interrupt_like_ctrl_c
from imgclassify.cli.uploader_process import ROUTES, UploaderProcess, check_port_free, check_python, check_source, \
    resolve_key, start_uploader

if TYPE_CHECKING:
    from common.bootstrap import Application

NAME = "emulate"
HELP = "run the serverless pipeline on the local emulators"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=port, default=8080, help="port serving the two API paths")
    parser.add_argument("--upload", type=Path, help="upload this folder's files under all/ in the bucket")
    parser.add_argument("--keep", action="store_true", help="keep the emulators' folder (logs, bucket) on exit")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="the gateway also answers requests addressed to NAME (repeatable); localhost, "
                             "127.0.0.1 and [::1] always; any other Host gets 421")
    parser.add_argument("--mount", type=Path, metavar="FOLDER",
                        help="mount the bucket on FOLDER (rclone + FUSE): FOLDER/all/ is the photos to sort, "
                             "FOLDER/<class>/ the copies — the old downloader-uploader's working folder, unchanged")
    parser.add_argument("--uploader", type=Path, metavar="DIR",
                        help="also start the old downloader-uploader from its source folder DIR, unchanged (flask "
                             "--app service run), working in the mounted bucket (--mount FOLDER, else a folder of its "
                             "own) with the functions' SERVICE_KEY; stopped with emulate")
    parser.add_argument("--uploader-port", type=port, default=8081,
                        help="its loopback port (default 8081, where the old client looks)")
    parser.add_argument("--uploader-python", metavar="PATH",
                        help="run it with this Python (e.g. the virtualenv its requirements.txt is installed in); "
                             "default: the one running imgclassify")
    parser.add_argument("--match", dest="default_match", choices=choices(MatchMode),
                        help="the match rule of a job that asks for none (default DEFAULT_MATCH, else hierarchy); "
                             "substring gives old clients the old service's rule")
    add_model_options(parser)
    add_job_options(parser, with_match=False)


def function_env(args: argparse.Namespace, weights: str, runtime: Runtime) -> dict[str, str]:
    """What the functions get: the same model options `run` and `serve` take."""
    env = {"MODEL": args.model.value, "MODEL_WEIGHTS": weights, "MODEL_RUNTIME": runtime.value,
           "THREADS": str(args.workers), "DEFAULT_TOP_K": str(args.top_k),
           # The functions listen on loopback ports of their own, reached only through the gateway (which checks
           # the user's names): a page rebinding a name to one of those ports is refused too.
           "ALLOWED_HOSTS": ",".join(LOOPBACK_HOSTS)}
    if args.min_score is not None:
        env["DEFAULT_MIN_SCORE"] = str(args.min_score)
    if getattr(args, "default_match", None):
        env["DEFAULT_MATCH"] = args.default_match
    return env


def check_uploader(args: argparse.Namespace, key_source: str) -> tuple[str, str]:
    """--uploader's checks, before anything starts: its folder, its Python, its port, and the key it shares with the
    functions (from DIR/.env too). Returns where the key came from and the Python to run it with."""
    if args.uploader is None:
        if args.uploader_python is not None:
            raise UsageError("--uploader-python needs --uploader DIR")
        return key_source, ""
    args.uploader = check_source(args.uploader)
    python = check_python(args.uploader_python)
    if args.uploader_port == args.port:
        raise UsageError(f"--uploader-port {args.uploader_port} is the gateway's --port")
    check_port_free(args.uploader_port)
    return resolve_key(args.uploader, key_source), python


def execute(args: argparse.Namespace) -> int:
    from common import bootstrap
    from common.config import Settings, env_names
    from imgclassify.emulation import Emulators, environ
    from imgclassify.local_stack import LocalStack

    # SERVICE_KEY (and the rest) from ./.env as the old services read it; the environment wins. The functions and
    # the gateway are started with this environment.
    key_source = dotenv.load([Path.cwd()]).source("SERVICE_KEY", os.environ)
    key_source, uploader_python = check_uploader(args, key_source)
    check_model_options(args)
    if args.weights not in ("imagenet", "none"):
        args.weights = str(Path(args.weights).resolve())  # the functions run elsewhere: paths are the user's
    if args.upload is not None and not args.upload.is_dir():
        raise UsageError(f"--upload {args.upload} is not a folder")
    weights, runtime = choose_weights(args, args.upload.resolve() if args.upload else None)
    detector = choose_detector(args, needed=True)
    # The model must load before anything says "pipeline up": a wrong file is one line here, not a silent hang.
    logging.getLogger("imgclassify").setLevel(logging.WARNING)
    model = bootstrap.cloud_app(Settings(model=args.model, weights=weights, runtime=runtime)).load_model().description
    emulators = Emulators().start()
    mounted: BucketMount | None = None
    uploader: UploaderProcess | None = None
    env = {**function_env(args, weights, runtime), **({"DETECTOR_MODEL": detector} if detector else {})}
    stack = LocalStack(emulators, gateway_port=args.port, function_env=env,
                       allowed_hosts=(*args.allowed_host, *env_names(os.environ, "ALLOWED_HOSTS")))
    try:
        try:
            stack.start()
        except RuntimeError as exc:
            raise UsageError(f"the functions did not start: {str(exc).splitlines()[-1]} (logs: "
                             f"{emulators.log_dir})") from None
        with environ(emulators.env):
            app = bootstrap.cloud_app(Settings(project=emulators.project, bucket=stack.bucket))
            app.recent_jobs(1)  # its client made here, inside the emulators' environment, for the gateway too

            def front_page_jobs() -> list[tuple[object, str | None]]:
                undone = app.ports.jobs.undone_jobs()
                return [(view, undone.get(view.id)) for view in app.recent_jobs(50)]

            stack.jobs_index = front_page_jobs
            # --uploader without --mount: the bucket still needs a folder to be the downloader-uploader's (as
            # deploy.sh picks the mount path on Cloud Run): one in emulate's own temporary folder.
            folder = args.mount or (emulators.log_dir / "bucket" if args.uploader else None)
            if folder is not None:
                mounted = mount_bucket(emulators.env["STORAGE_EMULATOR_HOST"], stack.bucket, folder.resolve(),
                                       emulators.log_dir)
            if args.upload:
                uploaded = app.upload_folder(bootstrap.folder_objects(args.upload.resolve()))(stack.bucket, "all/")
                print(f"uploaded {uploaded.count} photos under gs://{stack.bucket}/all/", file=sys.stderr)
                if uploaded.skipped:
                    print(f"left out {len(uploaded.skipped)} files that are not photos by their name: "
                          f"{', '.join(uploaded.skipped[:5])}{' …' if len(uploaded.skipped) > 5 else ''}",
                          file=sys.stderr)
        if mounted is not None and args.uploader is not None:
            uploader = start_uploader(args.uploader, mounted.folder, args.uploader_port, uploader_python,
                                      emulators.log_dir)
        print(f"pipeline up ({model}, {args.workers} at once): POST {stack.gateway_url}/classification-job, "
              f"GET {stack.gateway_url}/classification-job/<id>", file=sys.stderr)
        print("emulator environment (export to use the official clients against it):", file=sys.stderr)
        for key, value in {**emulators.env, "BUCKET": stack.bucket}.items():
            print(f"  export {key}={value}", file=sys.stderr)
        print(key_line(key_source) + " (the gateway listens on 127.0.0.1 only)", file=sys.stderr)
        say_where_copies_go(stack.bucket, mounted, uploader, args.uploader, uploader_python)
        print(f"logs: {emulators.log_dir}; Ctrl-C stops everything", file=sys.stderr, flush=True)
        interrupt_like_ctrl_c()
        show_progress(app, emulators.env)
    except KeyboardInterrupt:
        return 0
    finally:
        if uploader is not None:
            uploader.stop()  # first: it works in the mount
        if mounted is not None:
            mounted.stop()
        stack.stop()
        emulators.stop()
        if args.keep:
            print(f"kept {emulators.log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(emulators.log_dir, ignore_errors=True)


def say_where_copies_go(bucket: str, mounted: BucketMount | None, uploader: UploaderProcess | None,
                        source: Path | None, python: str) -> None:
    """Where a downloader-uploader finds the copies: in the mount, or nowhere on any disk (the old client would
    then report 100 % having uploaded nothing, so it is said at start)."""
    if mounted is None:
        print(f"copies are written to gs://{bucket}/<class>/, not to any folder: a downloader-uploader reading its "
              f"own disk finds none of them (--mount FOLDER makes the bucket its folder; --uploader DIR starts one "
              f"there)", file=sys.stderr)
        return
    print(f"gs://{bucket} mounted on {mounted.folder}: a downloader-uploader working there writes the photos to "
          f"all/ and finds the copies in <class>/", file=sys.stderr)
    if uploader is not None:
        print(f"downloader-uploader ({ROUTES}): {uploader.url} — {source} unchanged, run by {python}, pid "
              f"{uploader.process.pid}, log {uploader.log_path}", file=sys.stderr)


def show_progress(app: Application, emulator_env: dict[str, str]) -> NoReturn:
    """A line per job whenever its progress changes, until Ctrl-C."""
    from imgclassify.emulation import environ

    shown: dict[str, str] = {}
    while True:
        time.sleep(1)
        with environ(emulator_env):
            for view in app.recent_jobs(5):
                line = progress_line(view)
                if shown.get(view.id) != line:
                    shown[view.id] = line
                    print(line, file=sys.stderr, flush=True)
