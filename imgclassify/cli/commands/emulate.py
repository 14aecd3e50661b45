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

from common.domain.options import MatchMode, Runtime, choices
from common.routes import LOOPBACK_HOSTS
from imgclassify.cli import dotenv
from imgclassify.cli.bucket_mount import mount_bucket
from imgclassify.cli.commands.serve import key_line
from imgclassify.cli.model import check_model_options, choose_detector, choose_weights
from imgclassify.cli.options import UsageError, add_job_options, add_model_options, port
from imgclassify.cli.output import progress_line
from imgclassify.cli.signals import interrupt_like_ctrl_c

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


def execute(args: argparse.Namespace) -> int:
    from common import bootstrap
    from common.config import Settings, env_names
    from imgclassify.emulation import Emulators, environ
    from imgclassify.local_stack import LocalStack

    # SERVICE_KEY (and the rest) from ./.env as the old services read it; the environment wins. The functions and
    # the gateway are started with this environment.
    key_source = dotenv.load([Path.cwd()]).source("SERVICE_KEY", os.environ)
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
    mounted = None
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
            if args.mount is not None:
                mounted = mount_bucket(emulators.env["STORAGE_EMULATOR_HOST"], stack.bucket, args.mount.resolve(),
                                       emulators.log_dir)
            if args.upload:
                uploaded = app.upload_folder(bootstrap.folder_objects(args.upload.resolve()))(stack.bucket, "all/")
                print(f"uploaded {uploaded.count} photos under gs://{stack.bucket}/all/", file=sys.stderr)
                if uploaded.skipped:
                    print(f"left out {len(uploaded.skipped)} files that are not photos by their name: "
                          f"{', '.join(uploaded.skipped[:5])}{' …' if len(uploaded.skipped) > 5 else ''}",
                          file=sys.stderr)
        print(f"pipeline up ({model}, {args.workers} at once): POST {stack.gateway_url}/classification-job, "
              f"GET {stack.gateway_url}/classification-job/<id>", file=sys.stderr)
        print("emulator environment (export to use the official clients against it):", file=sys.stderr)
        for key, value in {**emulators.env, "BUCKET": stack.bucket}.items():
            print(f"  export {key}={value}", file=sys.stderr)
        print(key_line(key_source) + " (the gateway listens on 127.0.0.1 only)", file=sys.stderr)
        if mounted is not None:
            print(f"gs://{stack.bucket} mounted on {mounted.folder}: a downloader-uploader working there writes "
                  f"the photos to all/ and finds the copies in <class>/", file=sys.stderr)
        else:
            print(f"copies are written to gs://{stack.bucket}/<class>/, not to any folder: a downloader-uploader "
                  f"reading its own disk finds none of them (--mount FOLDER makes the bucket its folder)",
                  file=sys.stderr)
        print(f"logs: {emulators.log_dir}; Ctrl-C stops everything", file=sys.stderr, flush=True)
        interrupt_like_ctrl_c()
        shown: dict[str, str] = {}
        while True:
            time.sleep(1)
            with environ(emulators.env):
                for view in app.recent_jobs(5):
                    line = progress_line(view)
                    if shown.get(view.id) != line:
                        shown[view.id] = line
                        print(line, file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        if mounted is not None:
            mounted.stop()
        stack.stop()
        emulators.stop()
        if args.keep:
            print(f"kept {emulators.log_dir}", file=sys.stderr)
        else:
            shutil.rmtree(emulators.log_dir, ignore_errors=True)
