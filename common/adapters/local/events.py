"""Job events, embedded: one JSON line each in DIR/.imgclassify/events.jsonl."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path


class JsonLinesEvents:
    """Job events, embedded: one JSON line each in DIR/.imgclassify/events.jsonl."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()

    def publish_event(self, event: dict[str, object]) -> None:
        with self._lock, open(self._path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(event) + "\n")
