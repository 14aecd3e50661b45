"""`imgclassify undo DIR [JOB_ID]`: remove the copies a job made, only those still holding what it wrote."""
from __future__ import annotations

import argparse
import json

from imgclassify.cli.folder import existing_folder
from imgclassify.cli.options import add_folder

NAME = "undo"
HELP = "remove the copies a job made (the latest job without JOB_ID)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_folder(parser, job=True)
    parser.add_argument("--json", action="store_true")


def execute(args: argparse.Namespace) -> int:
    with existing_folder(args, writer=True) as app:
        report = app.undo_job(app.pick_job(args.job_id, not_undone=True))
        job_id = report["id"]
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"job {job_id}: removed {report['removed']} copies it made"
          + (f", {report['missing']} already gone" if report["missing"] else ""))
    for kept in report["kept"]:
        print(f"  kept {kept['name']}: {kept['reason']}")
    return 0
