"""How big the results page of a large job is, and how fast Chromium opens it: a synthetic job of N photos (the
ImageNet sample photos repeated, hard-linked, so the disk holds them once) with results as a real run records them.

  .venv/bin/python bench/report.py --photos 10000 > bench/results/report.json

Run it alone: nothing else on the CPUs.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared/photos/imagenet-dev")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    from bench.machine import describe
    from common.adapters.local import SqliteJobStore
    from common.bootstrap import folder_app
    from common.pages import render_file
    from common.domain.jobs import JobRecord, JobSpec, new_job_id
    from common.domain.results import ImageResult, Label

    sources = sorted(args.source.iterdir())
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "all").mkdir()
        jobs = SqliteJobStore(root / ".imgclassify/jobs.sqlite3")
        job = JobRecord(new_job_id(), JobSpec(("dogs", "birds", "food"), "local"), args.photos,
                        "2026-11-27T00:00:00.000+00:00")
        jobs.create_job(job)
        for i in range(args.photos):
            name = f"all/{i // 1000:02d}/{i:05d}.jpg"
            (root / name).parent.mkdir(exist_ok=True)
            os.link(sources[i % len(sources)], root / name)
            matched = (("dogs", "birds", "food", "")[i % 4],)
            jobs.record_result(job.id, ImageResult(name, True, tuple(m for m in matched if m),
                                                   (Label(1, "label", 0.9), Label(2, "other", 0.05)),
                                                   scores={"dogs": 0.9, "birds": 0.1, "food": 0.0}))
        started = time.perf_counter()
        app = folder_app(root)
        report = app.report(job.id)
        _, page = render_file(report.view, report.results, "html", lambda name: app.report.thumbnail(job.id, name))
        render_seconds = time.perf_counter() - started
        out = root / "report.html"
        out.write_text(page)
        from playwright.sync_api import sync_playwright

        loads = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=args.chromium, args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"])
            for _ in range(args.trials):
                tab = browser.new_page(viewport={"width": 1280, "height": 900})
                started = time.perf_counter()
                tab.goto(out.as_uri())
                tab.wait_for_load_state("load")
                loads.append(time.perf_counter() - started)
                figures = tab.locator("figure").count()
                tab.close()
            browser.close()
    print(json.dumps({
        "machine": describe(), "photos": args.photos, "report_bytes": out_size if (out_size := len(page.encode())) else 0,
        "render_seconds": round(render_seconds, 2), "chromium_load_seconds": [round(x, 2) for x in loads],
        "chromium_load_seconds_median": round(statistics.median(loads), 2), "figures_rendered_at_load": figures,
        "note": "previews inline for the first 3,000 photos (~5 KB each), names only past that; 120 figures per "
                "section rendered at load, the rest in <template>s shown on demand",
    }, indent=2))


if __name__ == "__main__":
    main()
