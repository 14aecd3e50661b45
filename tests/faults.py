"""Crash points, for the reliability tests: kill the process at a named point, as a lost instance would.

Off unless IMGCLASSIFY_CRASH lists points ("after_copy,after_count"); each point fires once per object (a marker
file in IMGCLASSIFY_CRASH_DIR remembers), so the redelivery that follows runs through.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

EXIT_CODE = 86


def crash_point(point: str, key: str) -> None:
    points = os.environ.get("IMGCLASSIFY_CRASH")
    if not points or point not in points.split(","):
        return
    marker = Path(os.environ["IMGCLASSIFY_CRASH_DIR"]) / hashlib.sha256(f"{point}:{key}".encode()).hexdigest()
    try:
        marker.open("x").close()
    except FileExistsError:
        return
    os._exit(EXIT_CODE)
