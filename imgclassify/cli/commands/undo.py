"""`imgclassify undo DIR [JOB_ID]`: remove the copies a job made, only those still holding what it wrote."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from imgclassify.cli.folder import existing_folder
from imgclassify.cli.options import add_folder
from imgclassify.cli.output import latest_that_changed

NAME = "undo"
HELP = "remove the copies a job made (without JOB_ID: the latest that made copies and is not undone)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_folder(parser, job=True)
    parser.add_argument("--json", action="store_true")


def execute(args: argparse.Namespace) -> int:
    with existing_folder(args, writer=True) as app:
        job_id, taken = (args.job_id, "") if args.job_id else latest_that_changed(app.list_jobs(), not_undone=True)
        if job_id is None:
            print(f"imgclassify: nothing to undo in {args.dir}: no job here owns copies (dry runs make none; "
                  "undone jobs own none)", file=sys.stderr)
            return 1
        report = app.undo_job(job_id)
        job_id = report["id"]
        followed = corrections_on(app, job_id)
    if args.json:
        print(json.dumps({**report, "corrections_kept": followed}, indent=2))
        return 0
    if taken:
        print(f"undoing {taken}")
    print(f"job {job_id}: removed {report['removed']} copies it made"
          + (f", {report['missing']} already gone" if report["missing"] else ""))
    for kept in report["kept"]:
        print(f"  kept {kept['name']}: {kept['reason']}")
    if followed:
        print(f"  the {followed} correction{'s' if followed != 1 else ''} of its photos stay: later jobs here still "
              f"follow them (imgclassify examples {args.dir} lists them; --forget CLASS [--photo NAME] forgets)")
    return 0


def corrections_on(app: Any, job_id: str) -> int:
    """How many kept corrections name one of this job's photos (by content, for one of its classes)."""
    contents = {result.content for result in app.report(job_id).results if result.content}
    return sum(1 for row in app.kept_corrections() if row["content"] in contents)
