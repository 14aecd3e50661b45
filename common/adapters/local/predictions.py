"""Stored predictions on SQLite, beside the jobs, and the corrections people made."""
from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from common.adapters.local.sqlite import connect, database_errors

LOOKUP_BATCH = 500  # contents per query: under SQLite's bound-variable limit, one query per few hundred photos


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

    def get_many(self, model: str, contents: Sequence[str]) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        wanted = list(dict.fromkeys(contents))
        for start in range(0, len(wanted), LOOKUP_BATCH):
            chunk = wanted[start:start + LOOKUP_BATCH]
            with self._lock, database_errors("reading stored predictions"):
                rows = self._db.execute("SELECT content, prediction FROM predictions WHERE model = ? AND content IN "
                                        f"({', '.join('?' * len(chunk))})", (model, *chunk)).fetchall()
            found.update((str(content), bytes(blob)) for content, blob in rows)
        return found

    def put(self, model: str, content: str, prediction: bytes) -> None:
        with self._lock, database_errors("storing a prediction"):
            self._db.execute("INSERT OR REPLACE INTO predictions VALUES (?, ?, ?)", (model, content, prediction))

    # --- corrections (the same database; few rows) ---------------------------------------------------------------
    def record_correction(self, bucket: str, word: str, content: str, belongs: bool) -> None:
        with self._lock, database_errors("storing a correction"):
            self._db.execute("INSERT OR REPLACE INTO corrections VALUES (?, ?, ?, ?)",
                             (bucket, word, content, int(belongs)))

    def corrections(self, bucket: str, word: str) -> dict[str, bool]:
        with self._lock, database_errors("reading corrections"):
            rows = self._db.execute("SELECT content, belongs FROM corrections WHERE bucket = ? AND word = ? "
                                    "ORDER BY content", (bucket, word)).fetchall()
        return {content: bool(belongs) for content, belongs in rows}

    def forget_correction(self, bucket: str, word: str, content: str) -> bool:
        with self._lock, database_errors("removing a correction"):
            return self._db.execute("DELETE FROM corrections WHERE bucket = ? AND word = ? AND content = ?",
                                    (bucket, word, content)).rowcount > 0

    def corrected_words(self, bucket: str) -> list[str]:
        with self._lock, database_errors("reading corrections"):
            return [row[0] for row in self._db.execute(
                "SELECT DISTINCT word FROM corrections WHERE bucket = ? ORDER BY word", (bucket,))]

    def close(self) -> None:
        with self._lock:
            self._db.close()
