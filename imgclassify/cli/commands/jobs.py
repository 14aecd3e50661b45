"""`imgclassify jobs DIR`: the folder's jobs from their kept counters, with how many copies each owns (`--check`: and
how many of those are still there)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from imgclassify.cli.folder import existing_folder
from imgclassify.cli.options import add_folder

NAME = "jobs"
HELP = "list the folder's jobs (watching and undone ones said)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_folder(parser)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--check", action="store_true",
                        help="also look for each copy on disk (reads every result: slower for large jobs)")


def execute(args: argparse.Namespace) -> int:
    with existing_folder(args) as app:
        kept = app.list_jobs(look=args.check)
    rows: list[dict[str, Any]] = [
        {"id": job.view.id, "created_at": job.view.job.created_at, "classes": list(job.view.job.spec.classes),
         "state": str(job.view.state) + (" (dry run)" if job.view.job.spec.dry_run else "") +
         (" (undone)" if job.undone_at else ""), "undone_at": job.undone_at,
         "processed": job.view.counters.processed, "failed": job.view.counters.failed,
         "number_of_files": job.view.number_of_files, "copies_present": job.copies_present,
         "copies_made": job.copies_made} for job in kept]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'job':32}  {'created':19}  {'state':18}  {'done':>9}  {'copies':>9}  classes")
    for job, row in zip(kept, rows):
        done = f"{job.view.done}/{row['number_of_files']}"
        copies = f"{row['copies_present']}/{row['copies_made']}" if args.check else str(row["copies_made"])
        print(f"{row['id']:32}  {row['created_at'][:19]:19}  {row['state']:18}  {done:>9}  {copies:>9}  "
              f"{', '.join(row['classes'])}")
    return 0
