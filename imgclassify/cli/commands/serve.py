"""`imgclassify serve DIR`: the old service's HTTP API (and the results pages) over a folder, on loopback."""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

from common.domain.options import MatchMode, choices
from common.routes import Action
from imgclassify.cli import dotenv
from imgclassify.cli.folder import embedded_app
from imgclassify.cli.remembered import fill_in
from imgclassify.cli.options import (UsageError, add_examples_option, add_folder, add_job_options, add_model_options,
                                     port, with_taught_classes)
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
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1); any other than loopback needs SERVICE_KEY "
                             "(environment or a .env in the working directory or DIR) or --insecure-no-key")
    parser.add_argument("--insecure-no-key", action="store_true",
                        help="listen on a non-loopback --host without SERVICE_KEY: anyone who reaches it may sort, "
                             "undo and read your photos")
    parser.add_argument("--match", "--default-match", dest="default_match", choices=choices(MatchMode),
                        help="the match rule of a job that asks for none (default: what this folder was served "
                             "with, else DEFAULT_MATCH, else hierarchy); substring gives old clients the old "
                             "service's rule")
    add_model_options(parser)
    add_job_options(parser, with_match=False)
    add_examples_option(parser)


def load_keys(folders: list[Path]) -> str:
    """SERVICE_KEY as the old services read it (.env files; the environment first): where it came from, or ''."""
    loaded = dotenv.load(folders)
    return loaded.source("SERVICE_KEY", os.environ)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def key_line(source: str) -> str:
    return (f"requests need the key (SERVICE_KEY from {source}) in Authorization" if source else
            "requests need no key (no SERVICE_KEY in the environment or a .env): anyone who can reach the port may "
            "use it")


def execute(args: argparse.Namespace) -> int:
    from common.config import env_names
    from common.http import create_app
    from common.pages import FrontPage
    from imgclassify.http_server import create_server

    # DIR's .env first, then the working directory's (where the old service was started); the environment wins.
    source = load_keys([args.dir, Path.cwd()])
    if not is_loopback(args.host) and not source and not args.insecure_no_key:
        raise UsageError(f"--host {args.host} listens beyond this machine and no SERVICE_KEY is set (environment, "
                         f"{args.dir / '.env'} or ./.env): set one, or pass --insecure-no-key")
    # --match, else what the folder was served with, else DEFAULT_MATCH: handed to the settings as the variable the
    # cloud functions read (the folder's settings are built from the environment).
    fill_in(args, args.dir, ("default_match",))
    os.environ["DEFAULT_MATCH"] = args.default_match
    with embedded_app(args, load_model=True) as (app, _):
        resumed = app.resume_unfinished()
        admit = app.admit(args.max_queued)

        def create(body: object) -> object:
            return admit(with_taught_classes(body, args))

        handlers = {Action.CREATE: lambda: create, Action.STATUS: lambda: app.job_status,
                    Action.UNDO: lambda: app.undo_job, Action.CLOSE: lambda: app.close_job,
                    Action.REPORT: lambda: app.report, Action.THUMBNAIL: lambda: app.report,
                    Action.CORRECT: lambda: app.correct_job, Action.RETRY: lambda: admit.retry,
                    Action.INDEX: lambda: lambda: FrontPage(
                        [(kept.view, kept.undone_at) for kept in app.list_jobs(with_copies=False)],
                        tuple(name for name, _ in args.examples))}  # the classes it teaches, suggested first
        # The loopback names are added by create_app; these are the user's own (flags, then ALLOWED_HOSTS).
        settings = dataclasses.replace(app.settings, allowed_hosts=(*args.allowed_host,
                                                                    *env_names(os.environ, "ALLOWED_HOSTS")))
        server = listen(create_server, create_app(handlers, settings), args, app.settings.max_body_bytes)
        if resumed:
            print(f"resuming {len(resumed)} unfinished job(s): {', '.join(resumed)}", file=sys.stderr)
        print(key_line(source), file=sys.stderr)
        print(f"old clients' default match rule: {app.settings.default_match.value}", file=sys.stderr)
        host = f"[{args.host}]" if ":" in args.host else args.host
        if not is_loopback(args.host) and not settings.allowed_hosts:
            print(f"note: only requests addressed to localhost are answered (421 otherwise): name this machine "
                  f"with --allowed-host NAME (e.g. --allowed-host {args.host})", file=sys.stderr)
        print(f"serving {app.root} on http://{host}:{server.effective_port}  (POST /classification-job, "
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


def listen(create_server: Any, app: Any, args: argparse.Namespace, max_body_bytes: int) -> Any:
    """create_server on loopback; on another --host the same server, bound there."""
    from imgclassify.http_server import GuardedServer, logged

    if args.host == "127.0.0.1":
        return create_server(app, port=args.port, connection_limit=200, max_body_bytes=max_body_bytes)
    return GuardedServer(logged(app), host=args.host, port=args.port, threads=8, connection_limit=200,
                         channel_timeout=30, cleanup_interval=2, max_request_header_size=16 * 1024,
                         max_request_body_size=max_body_bytes, ident="imgclassify")
