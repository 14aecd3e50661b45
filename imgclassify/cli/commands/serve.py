"""`imgclassify serve DIR`: the old service's HTTP API (and the results pages) over a folder, on loopback."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from common.routes import Action
from imgclassify.cli.folder import embedded_app
from imgclassify.cli.options import (add_examples_option, add_folder, add_job_options, add_model_options, port,
                                     with_taught_classes)
from imgclassify.cli.signals import interrupt_like_ctrl_c

NAME = "serve"
HELP = "serve POST /classification-job and GET /classification-job/<id>"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_folder(parser)
    parser.add_argument("--port", type=port, default=8080)
    parser.add_argument("--max-queued", type=int, default=20_000,
                        help="images waiting to be classified beyond which new jobs get 429 (default 20000)")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="also answer requests addressed to NAME (repeatable; a reverse proxy's or a hosts-file "
                             "name). localhost, 127.0.0.1 and [::1] always are; any other Host gets 421")
    add_model_options(parser)
    add_job_options(parser, with_match=False)
    add_examples_option(parser)


def execute(args: argparse.Namespace) -> int:
    from common.config import env_names
    from common.http import create_app
    from imgclassify.http_server import create_server

    with embedded_app(args, load_model=True) as (app, _):
        resumed = app.resume_unfinished()
        admit = app.admit(args.max_queued)

        def create(body: object) -> object:
            return admit(with_taught_classes(body, args))

        handlers = {Action.CREATE: lambda: create, Action.STATUS: lambda: app.job_status,
                    Action.UNDO: lambda: app.undo_job, Action.CLOSE: lambda: app.close_job,
                    Action.REPORT: lambda: app.report, Action.THUMBNAIL: lambda: app.report,
                    Action.CORRECT: lambda: app.correct_job, Action.RETRY: lambda: admit.retry,
                    Action.INDEX: lambda: lambda: [(kept.view, kept.undone_at)
                                                  for kept in app.list_jobs(with_copies=False)]}
        # The loopback names are added by create_app; these are the user's own (flags, then ALLOWED_HOSTS).
        settings = dataclasses.replace(app.settings, allowed_hosts=(*args.allowed_host,
                                                                    *env_names(os.environ, "ALLOWED_HOSTS")))
        server = create_server(create_app(handlers, settings), port=args.port, connection_limit=200,
                               max_body_bytes=app.settings.max_body_bytes)
        if resumed:
            print(f"resuming {len(resumed)} unfinished job(s): {', '.join(resumed)}", file=sys.stderr)
        print(f"serving {app.root} on http://127.0.0.1:{server.effective_port}  (POST /classification-job, "
              f"GET /classification-job/<id>); Ctrl-C stops", file=sys.stderr, flush=True)
        interrupt_like_ctrl_c()
        try:
            server.run()
        except KeyboardInterrupt:
            pass
        finally:
            server.close()
            app.stop(cancel=True)
        return 0
