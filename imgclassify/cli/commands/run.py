"""`imgclassify run DIR --classes …`: sort DIR/all/** into DIR/<class>/, resuming the same job if it was stopped."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common import bootstrap
from common.domain.results import ImageResult
from common.domain.status import JobView
from imgclassify.cli.folder import embedded_app, folders
from imgclassify.cli.options import add_job_options, add_model_options, check_request, job_request
from imgclassify.cli.output import (Progress, corrections_line, meanings, next_steps, plan_lines, planned_copies,
                                   summary, table)
from imgclassify.cli.remembered import THRESHOLDS, fill_in
from imgclassify.cli.signals import interrupt_like_ctrl_c

NAME = "run"
HELP = "sort DIR/all/** into DIR/<class>/ (copies; originals stay)"
PLAN_PAGE = 1000  # results read at a time for a dry run's plan
CALLBACK_WAIT_SECONDS = 30.0  # what an exiting run gives its completion callback (sent in the background)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", type=Path, help="the folder whose all/ holds the photos (or, with --out, the photos)")
    parser.add_argument("--classes", nargs="+", required=True, metavar="CLASS")
    parser.add_argument("--out", type=Path, help="sort the photos in DIR itself (no all/ needed) into this folder")
    add_model_options(parser)
    add_job_options(parser)
    parser.add_argument("--json", action="store_true", help="print the final job status object instead of a table")
    parser.add_argument("--dry-run", action="store_true",
                        help="the whole job (counts, matches, per-photo results) without making any copy")
    parser.add_argument("--callback-url", help="POST the final status here when the job completes")


def execute(args: argparse.Namespace) -> int:
    fill_in(args, folders(args)[0], THRESHOLDS)  # the request is checked before the folder is opened
    body = job_request(args, **({"dry_run": True} if args.dry_run else {}))
    check_request(body)
    with embedded_app(args, load_model=False) as (app, model):
        return _run(args, app, model, body)


def _run(args: argparse.Namespace, app: bootstrap.LocalApplication, model: str, body: dict[str, object]) -> int:
    refusal = app.examples_refusal() if body.get("examples") else None
    if refusal is not None:  # before anything is sorted: every photo would fail with it
        print(f"imgclassify: error: --examples: {refusal}", file=sys.stderr)
        return 2
    resumable = app.find_resumable(body)
    resumed: dict[str, int] | None = None
    progress = Progress(sys.stderr.isatty() and not args.json)
    job_id: str | None = resumable
    interrupt_like_ctrl_c()
    try:
        if resumable:
            if not args.json:
                print(f"resuming job {job_id}", file=sys.stderr)
            already_done, published = app.resume_job(resumable)
            resumed = {"already_done": already_done, "published": published}
        else:
            job_id = app.create_job(body).id
        while not app.wait(timeout=0.2):
            if progress.enabled and job_id:  # the status is read only to be drawn: not with --json or no terminal
                progress.show(app.job_status(job_id))
    except KeyboardInterrupt:
        progress.end()
        print("stopping: finishing the images in progress...", file=sys.stderr)
        app.stop(cancel=True)
        if job_id is None:
            print("interrupted while listing the photos. Run the same command again to resume.", file=sys.stderr)
            return 130
        view = app.job_status(job_id)
        print(f"interrupted: {view.done} of {view.number_of_files} images done. "
              f"Run the same command again to resume job {job_id}.", file=sys.stderr)
        return 130
    if job_id is None:  # resumed or created above: an id either way
        return 1
    view, written = app.report.totals(job_id)  # kept counters: every result is read only for a dry run's plan
    progress.show(view)
    progress.end()
    app.stop()
    answer = {**view.to_dict(), "model": model, "copies_written": written}
    spec = view.job.spec
    plan = planned_copies(_planned(app, view), spec.source_prefix) if spec.dry_run else None
    if plan is not None:
        answer["would_copy"] = plan
    if resumed is not None:
        answer["resumed"] = resumed
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print(meanings(view))
        if plan is not None:
            print("what would be copied where (dry run):\n" + plan_lines(plan))
            if view.counters.unmatched:
                print(f"  ({view.counters.unmatched} photos match no class: not listed)")
        print(table(view))
        if corrections_line(view):
            print(corrections_line(view))
        print(summary(view, written))
        print(next_steps(app.settings.local_root, view))
        if view.counters.failed:
            print(f"failed images and reasons: imgclassify status {app.settings.local_root} {job_id}",
                  file=sys.stderr)
    if spec.callback_url and not app.wait_for_callbacks(CALLBACK_WAIT_SECONDS):
        print(f"imgclassify: the completion callback was not answered within {CALLBACK_WAIT_SECONDS:.0f} s; "
              "not waiting longer", file=sys.stderr)
    if view.job.errors:
        print(f"imgclassify: error: {view.job.errors[0]}", file=sys.stderr)
        return 2
    if not view.complete:
        reason = view.error or f"{view.remaining} images were neither classified nor failed"
        print(f"imgclassify: job {job_id} did not complete: {reason}", file=sys.stderr)
        return 1
    return 0


def _planned(app: bootstrap.LocalApplication, view: JobView) -> list[ImageResult]:
    """A dry run's photos that would be copied, and those that failed: its class and failed sections read page by
    page (what a photo matching nothing would do goes without saying, so a library's dry run lists its matches)."""
    found: dict[str, ImageResult] = {}
    for section in [f"class:{name}" for name in view.job.spec.classes] + ["section:failed"]:
        offset, total = 0, 1
        while offset < total:
            _, page = app.report.page(view.id, section, offset, PLAN_PAGE)
            found.update((result.name, result) for result in page.results)
            offset, total = offset + max(1, len(page.results)), page.total
    return list(found.values())
