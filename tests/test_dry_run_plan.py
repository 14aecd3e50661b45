"""A dry run's plan lists what would be copied (and what failed), read a page at a time from the class sections:
its size follows the matches, not the library (issue 31)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import MOBILENET_TFLITE

CLI = str(Path(sys.executable).with_name("imgclassify"))


def test_a_dry_run_lists_exactly_the_photos_it_would_copy(tmp_path, shared):
    root = tmp_path / "dir"
    (root / "all").mkdir(parents=True)
    for photo in sorted((shared / "photos/coral").iterdir()):
        if photo.suffix in (".jpg", ".bmp"):
            shutil.copy(photo, root / "all" / photo.name)
    (root / "all/broken.jpg").write_bytes(b"not a photo")
    run = subprocess.run([CLI, "run", str(root), "--classes", "birds", "cats", "--weights", str(MOBILENET_TFLITE),
                          "--dry-run", "--json"], capture_output=True, text=True, timeout=300, check=True)
    answer = json.loads(run.stdout)
    plan = {entry["photo"]: entry for entry in answer["would_copy"]}
    copied = {photo for photo, entry in plan.items() if entry["to"]}
    assert sum(answer["matches"].values()) == sum(len(entry["to"]) for entry in plan.values())
    assert "broken.jpg" in plan and plan["broken.jpg"]["to"] == [] and "failed" in plan["broken.jpg"]
    assert len(plan) == len(copied) + answer["failed"]  # a photo matching nothing is not listed
    assert answer["unmatched"] > 0 and not any(p.is_dir() for p in root.iterdir() if p.name in ("birds", "cats"))
