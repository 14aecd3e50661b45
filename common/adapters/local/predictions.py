"""Stored predictions on SQLite, beside the jobs."""
from __future__ import annotations

import os
import threading

from common.adapters.local.sqlite import connect, database_errors


class SqlitePredictionStore:
    """Stored predictions beside the jobs (DIR/.imgclassify/jobs.sqlite3, table predictions)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._db = connect(path)
        self._lock = threading.Lock()

    def get(self, model: str, content: str) -> bytes | None:
        with self._lock, database_errors("reading a stored prediction"):
            row = self._db.execute("SELECT prediction FROM predictions WHERE model = ? AND content = ?",
                                   (model, content)).fetchone()
        return bytes(row[0]) if row else None

    def put(self, model: str, content: str, prediction: bytes) -> None:
        with self._lock, database_errors("storing a prediction"):
            self._db.execute("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?)", (model, content, prediction))

    def close(self) -> None:
        with self._lock:
            self._db.close()
