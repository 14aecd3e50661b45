"""A job's per-image results as CSV (spreadsheet-safe) or JSON Lines."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from common.domain.results import ImageResult
from common.domain.status import JobView

EXPORT_FIELDS = ("file", "ok", "matched", "top_label", "top_score", "scores", "reason", "copies", "prediction")
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def relative(name: str, source_prefix: str) -> str:
    return name[len(source_prefix):] if name.startswith(source_prefix) else name


def spreadsheet_safe(value: object) -> object:
    """OWASP's rule against CSV injection: a text cell a spreadsheet would run as a formula starts with a quote."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def export_rows(view: JobView, results: Iterable[ImageResult]) -> list[dict[str, Any]]:
    rows = []
    for result in sorted(results, key=lambda r: r.name):
        top = result.labels[0] if result.labels else None
        rows.append({"file": relative(result.name, view.job.spec.source_prefix), "ok": result.ok,
                     "matched": list(result.matched), "top_label": top.name if top else "",
                     "top_score": round(top.score, 6) if top else "", "scores": result.scores,
                     "reason": result.reason, "copies": list(result.copies), "prediction": result.prediction})
    return rows


def export_csv(view: JobView, results: Iterable[ImageResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for row in export_rows(view, results):
        cells = {**row, "matched": ";".join(row["matched"]), "copies": ";".join(row["copies"]),
                 "scores": json.dumps(row["scores"], sort_keys=True)}
        writer.writerow({key: spreadsheet_safe(value) for key, value in cells.items()})
    return buffer.getvalue()


def export_jsonl(view: JobView, results: Iterable[ImageResult]) -> str:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in export_rows(view, results))
