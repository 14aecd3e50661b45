"""`imgclassify watch DIR --classes …`: sort DIR/all/ now and every photo that lands there later, until Ctrl-C."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from imgclassify.cli.folder import embedded_app, folders
from imgclassify.cli.options import add_job_options, add_model_options, check_request, job_request
from imgclassify.cli.output import table
from imgclassify.cli.remembered import THRESHOLDS, fill_in
from imgclassify.cli.signals import interrupt_like_ctrl_c

NAME = "watch"
HELP = "sort DIR/all/ now and every photo that lands there later, until Ctrl-C"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="the folder whose all/ receives the photos")
    parser.add_argument("--classes", nargs="+", required=True, metavar="CLASS")
    parser.add_argument("--callback-url", help="POST the final status here when the job completes (signed with "
                                               "SERVICE_KEY when set)")
    parser.add_argument("--json", action="store_true", help="print the final job status object instead of a table")
    add_model_options(parser)
    add_job_options(parser)


def execute(args: argparse.Namespace) -> int:
    fill_in(args, folders(args)[0], THRESHOLDS)  # the request is checked before the folder is opened
    body = job_request(args, watch=True)
    check_request(body)
    with embedded_app(args, load_model=False) as (app, model):
        photos = Path(app.settings.local_photos)
        arrivals = app.arrivals(photos).start()  # before the listing: nothing written meanwhile is missed
        job = app.create_job(body)
        job_id = job.id
        print(f"watching {photos} (job {job_id}, {model}): {job.number_of_files} photos there now; "
              "new ones are sorted as they land. Ctrl-C stops.", file=sys.stderr, flush=True)
        interrupt_like_ctrl_c()
        shown, failures_shown = "", set[str]()
        try:
            while True:
                time.sleep(0.25)
                view = app.job_status(job_id)
                if view.counters.failed > len(failures_shown):  # each failed file once, with its reason
                    for result in app.report(job_id).results:
                        if not result.ok and result.name not in failures_shown:
                            failures_shown.add(result.name)
                            print(f"failed {result.name}: {result.reason}", file=sys.stderr, flush=True)
                line = (f"{view.counters.processed}/{view.number_of_files} sorted, {view.counters.failed} failed  "
                        + ", ".join(f"{c} {n}" for c, n in view.matches.items()))
                if line != shown:
                    shown = line
                    print(line, file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            arrivals.stop()
        print("stopping: closing the job once the photos in hand are sorted...", file=sys.stderr, flush=True)
        app.close_job(job_id)
        app.wait()
        app.stop()
        view = app.job_status(job_id)
        print(json.dumps(view.to_dict(), indent=2) if args.json else table(view))
        return 0 if view.complete else 1
