"""`imgclassify report DIR [JOB_ID]`: a job's results page as one HTML file (previews inline), or CSV / JSON Lines."""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, cast

from common.pages import render_file
from imgclassify.cli.folder import existing_folder
from imgclassify.cli.options import add_folder

NAME = "report"
HELP = "write a job's results page (one HTML file with previews) or its per-photo results as CSV / JSON Lines"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_folder(parser, job=True)
    parser.add_argument("--out", help="where to write it (default DIR/report-<job>.<format>; - for stdout)")
    parser.add_argument("--format", default="html", choices=["html", "csv", "jsonl"])
    parser.add_argument("--photos", type=Path, help="where the photos are when the job was run with --out")


def write_new_file(path: Path, data: bytes) -> None:
    """Write a new file beside path, then rename it over path: whatever was at path (a link included) is
    replaced, never written through."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # O_CREAT | O_EXCL
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


class LocalFiles(Protocol):
    """A folder's object store: each object is a file on this machine."""

    def local_path(self, name: str) -> Path: ...


def full_photo_link(objects: LocalFiles, page: Path | None) -> Callable[[str], str | None]:
    """Where a page written to `page` (None: to stdout, anywhere) finds each full photo: relative to the page,
    so a folder moved with its report still links."""
    from urllib.request import pathname2url

    from common.domain.errors import ObjectMissing

    def link(name: str) -> str | None:
        try:
            path = objects.local_path(name).absolute()
        except ObjectMissing:
            return None
        return path.as_uri() if page is None else pathname2url(os.path.relpath(path, page.absolute().parent))

    return link


def execute(args: argparse.Namespace) -> int:
    with existing_folder(args) as app:
        report = app.report(app.pick_job(args.job_id))
        job_id = report.view.id  # the full id, whatever prefix named it
        if not args.job_id:  # which job this is, and whether it made copies
            print(f"job {job_id} ({report.view.job.created_at[:19]}, the latest"
                  + (": a dry run, no copy made" if report.view.job.spec.dry_run else "") + ")", file=sys.stderr)
        out = None if args.out == "-" else Path(args.out) if args.out else \
            app.root / f"report-{job_id[:8]}.{args.format}"
        _, body = render_file(report.view, report.results, args.format,
                              lambda name, box: app.report.thumbnail(job_id, name, box),
                              full_photo_link(cast(LocalFiles, app.ports.objects), out))  # a folder app
    if out is None:
        sys.stdout.write(body)
        return 0
    data = body.encode("utf-8")
    write_new_file(out, data)
    print(f"{out}  ({len(data) // 1024} KB; open it in a browser)" if args.format == "html" else str(out))
    return 0
