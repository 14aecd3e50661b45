"""Job events, embedded: one JSON line each in DIR/.imgclassify/events.jsonl."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from common.adapters.local.state import StateFolder


class JsonLinesEvents:
    """Job events, embedded: one JSON line each in DIR/.imgclassify/events.jsonl (appended only to a regular file
    reached without following a link)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = Path(path)
        self._lock = threading.Lock()

    def publish_event(self, event: dict[str, object]) -> None:
        with self._lock, StateFolder(self._path.parent) as state, state.open_append(self._path.name) as handle:
            handle.write(json.dumps(event) + "\n")
