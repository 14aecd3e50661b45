"""`imgclassify examples DIR`: what the folder was taught by corrections (each photo said to be, or not to be, a
class), and forgetting them."""
from __future__ import annotations

import argparse
import json

from imgclassify.cli.folder import existing_folder
from imgclassify.cli.options import add_folder

NAME = "examples"
HELP = "list (or --forget) the corrections later jobs in DIR learn from"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_folder(parser)
    parser.add_argument("--forget", metavar="CLASS", help="forget this class's corrections (all, or --photo's)")
    parser.add_argument("--photo", help="with --forget: only this photo's (its name as the results page and the "
                                        "export show it, e.g. phone/x.jpg; its full name all/phone/x.jpg works too)")
    parser.add_argument("--json", action="store_true")


def execute(args: argparse.Namespace) -> int:
    with existing_folder(args, writer=bool(args.forget)) as app:
        if args.forget:
            forgotten = app.kept_corrections.forget(args.forget, args.photo)
            print(json.dumps({"forgotten": forgotten}) if args.json else
                  f"forgot {forgotten} correction{'s' if forgotten != 1 else ''} of {args.forget!r}")
            return 0 if forgotten or args.photo is None else 1
        rows = app.kept_corrections()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no corrections yet: mark photos on the results page of `imgclassify serve`, or POST "
              "/classification-job/<id>/corrections")
        return 0
    width = max(len(row["class"]) for row in rows)
    for row in rows:
        said = "is" if row["belongs"] else "is not"
        print(f"{row['class']:{width}}  {said:6}  {row['shown'] or '(a photo no job here has seen)'}")
    return 0
