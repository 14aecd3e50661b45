"""`imgclassify status DIR [JOB_ID]`: a job's state, what its classes meant, counts and failures."""
from __future__ import annotations

import argparse
import json

from imgclassify.cli.folder import existing_folder
from imgclassify.cli.options import add_folder
from imgclassify.cli.output import corrections_line, meanings, table
from imgclassify.cli.remembered import remembered

NAME = "status"
HELP = "print a job's status (the latest job without JOB_ID)"
SHOWN_FAILURES = 1000  # failed photos listed (each with its reason); the results page has them all


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_folder(parser, job=True)
    parser.add_argument("--json", action="store_true", help="the raw status object, as the HTTP API returns it")


def execute(args: argparse.Namespace) -> int:
    with existing_folder(args) as app:
        # The job's kept counters and one page of its failures: the same cost at 200,000 photos as at 1,000.
        view, failed = app.report.page(app.pick_job(args.job_id), "section:failed", 0, SHOWN_FAILURES)
    job_id = view.id  # the full id, whatever prefix named it
    failures = [{"name": r.name, "reason": r.reason} for r in failed.results]
    more = failed.total - len(failures)
    if args.json:
        print(json.dumps({**view.to_dict(), "failures": failures, **({"failures_not_shown": more} if more else {})},
                         indent=2))
        return 0
    print(f"job {job_id} ({view.job.created_at[:19]}): {view.state}, {view.done} of {view.number_of_files} photos "
          f"({view.percentage}%)")
    kept = remembered(app.root)
    if kept:
        print("  sorted with: " + " ".join(f"--{key.replace('_', '-')} {value}" for key, value in kept.items())
              + "  (kept for the next command here; pass a flag to change it)")
    print(meanings(view))
    print(table(view))
    if corrections_line(view):
        print(corrections_line(view))
    for failure in failures:
        print(f"  failed {failure['name']}: {failure['reason']}")
    if more:
        print(f"  … and {more} more failed: every one on the results page (imgclassify report {args.dir} {job_id})")
    print(f"results page: imgclassify report {args.dir} {job_id}")
    return 0
