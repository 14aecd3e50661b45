"""The results page: one self-contained HTML document per job (opens from disk: no server, no internet), and the
same per-image results as CSV or JSON Lines. Plain string building over the job's view and results; thumbnails
come from the caller (inline data for a file, a URL for a served page).

For testability every class section carries data-class="<class as typed>", the unmatched and failed sections
data-section="unmatched"/"failed", and each photo's element data-file="<path under the source prefix>".
"""
from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Callable, Iterable
from typing import Any

from common.domain.results import ImageResult

FIRST_PAGE = 120  # photos rendered per section at load; the rest wait in <template>s until asked for
PAGE = 240

ThumbnailSource = Callable[[str], str | None]  # object name -> <img src> (data: URI or URL), None when unavailable

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0 24px 48px;color:#222;background:#fafafa}
header{position:sticky;top:0;background:#fafafa;padding:12px 0;border-bottom:1px solid #ddd;z-index:1}
h1{font-size:20px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 4px} .meta,.meaning{color:#666}
.warnings li{color:#8a5300} .counts span{margin-right:16px} .state{font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px;margin-top:10px}
figure{margin:0;background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:6px;overflow:hidden}
figure img{width:100%;height:130px;object-fit:cover;border-radius:4px;background:#eee;display:block}
figcaption{font-size:12px;word-break:break-all} .score{font-weight:600} .labels{color:#666}
.reason{color:#a00} button.more{margin:10px 0;padding:6px 12px}
"""

_SCRIPT = """
document.addEventListener('click', function (event) {
  var button = event.target.closest('button.more');
  if (!button) return;
  var grid = document.getElementById(button.dataset.grid);
  var next = grid.parentNode.querySelector('template.more');
  if (next) { grid.appendChild(next.content); next.remove(); }
  var left = grid.parentNode.querySelectorAll('template.more').length;
  if (!left) button.remove(); else button.textContent = button.dataset.label;
});
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def relative(name: str, source_prefix: str) -> str:
    return name[len(source_prefix):] if name.startswith(source_prefix) else name


def _figure(result: ImageResult, source_prefix: str, thumbnail: ThumbnailSource, detail: str) -> str:
    path = relative(result.name, source_prefix)
    src = thumbnail(result.name)
    image = f'<img alt="{_e(path)}" src="{_e(src)}" loading="lazy" decoding="async">' if src else \
        '<div class="noimg">no preview</div>'
    labels = ", ".join(f"{label.name} {label.score:.2f}" for label in result.labels[:3])
    return (f'<figure data-file="{_e(path)}">{image}<figcaption><div>{_e(path)}</div>{detail}'
            f'<div class="labels">{_e(labels)}</div></figcaption></figure>')


def _section(number: int, key: str, value: str, title: str, subtitle: str, figures: list[str]) -> str:
    grid_id = f"grid-{number}"
    first, rest = figures[:FIRST_PAGE], figures[FIRST_PAGE:]
    pages = "".join(f'<template class="more">{"".join(rest[i:i + PAGE])}</template>'
                    for i in range(0, len(rest), PAGE))
    button = (f'<button class="more" data-grid="{grid_id}" data-label="show more">show {len(rest)} more'
              f'</button>') if rest else ""
    return (f'<section {key}="{_e(value)}"><h2>{_e(title)} <small>({len(figures)})</small></h2>'
            f'<div class="meaning">{subtitle}</div><div class="grid" id="{grid_id}">{"".join(first)}</div>'
            f'{pages}{button}</section>')


def render_report(view: dict[str, Any], results: Iterable[ImageResult], thumbnail: ThumbnailSource,
                  refresh_seconds: int | None = None) -> str:
    results = sorted(results, key=lambda r: r.name)
    prefix = view["source_prefix"]
    classes = view["classes"]
    resolved = view.get("resolved", {})
    sections = []
    for class_name in classes:
        members = [r for r in results if r.ok and class_name in r.matched]
        figures = [_figure(r, prefix, thumbnail, f'<div class="score">score {r.scores.get(class_name, 0):.2f}'
                                                  '</div>' if r.scores else "") for r in members]
        meaning = "; ".join(resolved.get(class_name, [])) or f"match rule: {view['match']}"
        sections.append(_section(len(sections), "data-class", class_name, class_name, _e(meaning), figures))
    unmatched = [r for r in results if r.ok and not r.matched]
    figures = []
    for result in unmatched:
        closest = max(result.scores.items(), key=lambda item: item[1]) if result.scores else None
        detail = (f'<div class="score">closest: {_e(closest[0])} {closest[1]:.2f}</div>' if closest else
                  f'<div class="score">top: {_e(result.labels[0].name) if result.labels else "?"}</div>')
        figures.append(_figure(result, prefix, thumbnail, detail))
    sections.append(_section(len(sections), "data-section", "unmatched", "Matched no class",
                             "each photo's closest class and its score", figures))
    failed = [r for r in results if not r.ok]
    figures = [_figure(r, prefix, thumbnail, f'<div class="reason">{_e(r.reason)}</div>') for r in failed]
    sections.append(_section(len(sections), "data-section", "failed", "Failed", "could not be classified, and why",
                             figures))

    warnings = "".join(f"<li>{_e(w)}</li>" for w in view.get("warnings", []) + view.get("errors", []))
    refresh = f'<meta http-equiv="refresh" content="{refresh_seconds}">' if refresh_seconds else ""
    counts = (f'<span class="state">{_e(view["state"])}</span><span>{view["processed"] + view["failed"]} of '
              f'{view["number_of_files"]} photos</span><span>{view["processed"]} classified</span>'
              f'<span>{view["failed"]} failed</span><span>{view.get("from_store", 0)} from stored predictions</span>')
    where = prefix if view["bucket"] == "local" else f'gs://{view["bucket"]}/{prefix}'
    settings = (f'job {_e(view["id"])} · created {_e(view["created_at"][:19])} · {_e(where)}'
                f' · match {_e(view["match"])} · min score {view["min_score"]} · top {view["top_k"]}'
                + (" · dry run: no copy made" if view.get("dry_run") else ""))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">{refresh}'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>imgclassify — {_e(", ".join(classes))}</title><style>{_STYLE}</style></head><body>'
            f'<header><h1>{_e(", ".join(classes))}</h1><div class="meta">{settings}</div>'
            f'<div class="counts">{counts}</div>'
            f'{f"<ul class=warnings>{warnings}</ul>" if warnings else ""}</header>'
            f'{"".join(sections)}<script>{_SCRIPT}</script></body></html>')


EXPORT_FIELDS = ("file", "ok", "matched", "top_label", "top_score", "scores", "reason", "copies", "prediction")


def export_rows(view: dict[str, Any], results: Iterable[ImageResult]) -> list[dict[str, Any]]:
    rows = []
    for result in sorted(results, key=lambda r: r.name):
        top = result.labels[0] if result.labels else None
        rows.append({"file": relative(result.name, view["source_prefix"]), "ok": result.ok,
                     "matched": list(result.matched), "top_label": top.name if top else "",
                     "top_score": round(top.score, 6) if top else "", "scores": result.scores,
                     "reason": result.reason, "copies": list(result.copies), "prediction": result.prediction})
    return rows


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value: object) -> object:
    """OWASP's rule against CSV injection: a text cell a spreadsheet would run as a formula starts with a quote."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value


def export_csv(view: dict[str, Any], results: Iterable[ImageResult]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
    writer.writeheader()
    for row in export_rows(view, results):
        cells = {**row, "matched": ";".join(row["matched"]), "copies": ";".join(row["copies"]),
                 "scores": json.dumps(row["scores"], sort_keys=True)}
        writer.writerow({key: spreadsheet_safe(value) for key, value in cells.items()})
    return buffer.getvalue()


def export_jsonl(view: dict[str, Any], results: Iterable[ImageResult]) -> str:
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in export_rows(view, results))


def render_index(views: Iterable[dict[str, Any]]) -> str:
    """The jobs of a served folder, newest first, each linking to its page."""
    rows = "".join(
        f'<tr><td><a href="/classification-job/{_e(v["id"])}/report">{_e(", ".join(v["classes"]))}</a></td>'
        f'<td>{_e(v["state"])}</td><td>{v["processed"] + v["failed"]}/{v["number_of_files"]}</td>'
        f'<td>{_e(v["created_at"][:19])}</td><td><a href="/classification-job/{_e(v["id"])}">status</a> · '
        f'<a href="/classification-job/{_e(v["id"])}/report?format=csv">csv</a></td></tr>'
        for v in sorted(views, key=lambda v: v["created_at"], reverse=True))
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
            f'<title>imgclassify jobs</title>'
            f'<style>{_STYLE} table{{border-collapse:collapse}} td{{padding:4px 12px;border-bottom:1px solid #ddd}}'
            f'</style></head><body><h1>Jobs</h1><table>{rows}</table></body></html>')
