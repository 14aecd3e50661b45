"""The HTML pages, from the Jinja2 templates beside this module (autoescape on: names and classes are data)."""
from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from functools import lru_cache

import jinja2
from markupsafe import Markup

from common.domain.results import ImageResult
from common.domain.status import JobState, JobView
from common.pages.exports import export_csv, export_jsonl, relative

FORMATS = {"html": "text/html; charset=utf-8", "csv": "text/csv; charset=utf-8",
           "jsonl": "application/x-ndjson; charset=utf-8"}
FIRST_PAGE = 120  # photos rendered per section at load; the rest wait in <template>s until asked for
PAGE = 240
REFRESH_SECONDS = 3  # a served page of a running job reloads itself

Box = tuple[float, float, float, float]  # the detector's box, fractions of the photo: x0, y0, x1, y1
# (object name, a box to draw on it or None) -> <img src> (data: URI or URL), None when unavailable
ThumbnailSource = Callable[[str, Box | None], str | None]
# object name -> where the full photo opens (a URL, or a path relative to the page's file), None when nowhere
FullPhotoSource = Callable[[str], str | None]


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("common.pages", "templates"),
                              autoescape=jinja2.select_autoescape(default=True), trim_blocks=False)


def _top_labels(result: ImageResult) -> str:
    return ", ".join(f"{label.name} {label.score:.2f}" for label in result.labels[:3])


def _detected(result: ImageResult, class_name: str, min_score: float) -> dict | None:  # type: ignore[type-arg]
    detection = result.detections.get(class_name)
    return detection if detection and detection["score"] >= min_score else None


def _score_line(result: ImageResult, class_name: str, min_score: float) -> Markup:
    """Why the photo is in the class: the classifier's mass, and the detector's class and score when it matched."""
    line = Markup('<div class="score">score {:.2f}</div>').format(result.scores.get(class_name, 0)) \
        if result.scores else Markup("")
    detection = _detected(result, class_name, min_score)
    if detection:
        line += Markup('<div class="detected" data-detected="{}">detector: {} {:.2f}</div>').format(
            detection["label"], detection["label"], detection["score"])
    return line


def _closest_score(result: ImageResult) -> float | None:
    return max(result.scores.values()) if result.scores else None


def _closest_line(result: ImageResult) -> Markup:
    if result.scores:
        name, score = max(result.scores.items(), key=lambda item: item[1])
        return Markup('<div class="score">closest: {} {:.2f}</div>').format(name, score)
    return Markup('<div class="score">top: {}</div>').format(result.labels[0].name if result.labels else "?")


def render_report(view: JobView, results: Iterable[ImageResult], thumbnail: ThumbnailSource,
                  refresh_seconds: int | None = None, corrections_url: str | None = None,
                  full_photo: FullPhotoSource | None = None, undo_url: str | None = None) -> str:
    ordered = sorted(results, key=lambda r: r.name)
    resolved = view.get("resolved", {})
    classes = [(name, [r for r in ordered if r.ok and name in r.matched],
                "; ".join(resolved.get(name, [])) or f"match rule: {view['match']}") for name in view["classes"]]
    where = view["source_prefix"] if view["bucket"] == "local" else f'gs://{view["bucket"]}/{view["source_prefix"]}'
    return _environment().get_template("report.html").render(
        view=view, classes=classes, unmatched=[r for r in ordered if r.ok and not r.matched],
        failed=[r for r in ordered if not r.ok], where=where,
        warnings=list(view.get("warnings", [])) + list(view.get("errors", [])), refresh_seconds=refresh_seconds,
        thumbnail=thumbnail, relative=lambda name: relative(name, view["source_prefix"]), top_labels=_top_labels,
        score_line=lambda r, c: _score_line(r, c, view["detector_min_score"]), closest_line=_closest_line,
        closest_score=_closest_score, full_photo=full_photo or (lambda name: None), undo_url=undo_url,
        matched_box=lambda r, c: tuple(d["box"]) if (d := _detected(r, c, view["detector_min_score"])) else None,
        reason_line=lambda r: Markup('<div class="reason">{}</div>').format(r.reason),
        first_page=FIRST_PAGE, page_size=PAGE, corrections_url=corrections_url)


def render(view: JobView, results: Iterable[ImageResult], fmt: str, thumbnail: ThumbnailSource,
           live: bool = False, corrections_url: str | None = None, full_photo: FullPhotoSource | None = None,
           undo_url: str | None = None) -> tuple[str, str]:
    """(content type, body) of a job's page or export; a served page of a job in progress refreshes itself, one
    that can take corrections (`corrections_url`) has them on each photo, and one with `undo_url` an undo button."""
    if fmt == "csv":
        return FORMATS[fmt], export_csv(view, results)
    if fmt == "jsonl":
        return FORMATS[fmt], export_jsonl(view, results)
    refresh = REFRESH_SECONDS if live and JobState(view["state"]).in_progress else None
    return FORMATS[fmt], render_report(view, results, thumbnail, refresh, corrections_url, full_photo, undo_url)


MAX_INLINE_PREVIEWS = 3000  # a file carries previews inline (~5 KB each): past this, names only (a quick file)


def render_file(view: JobView, results: Iterable[ImageResult], fmt: str,
                preview: Callable[[str, Box | None], bytes | None],
                full_photo: FullPhotoSource | None = None) -> tuple[str, str]:
    """A page to keep as a file: previews inline as data URIs, so it opens from disk with no server; each links
    to its full photo where `full_photo` says where that is from the file."""
    inlined = 0

    def inline(name: str, box: Box | None = None) -> str | None:
        nonlocal inlined
        inlined += 1
        data = preview(name, box) if inlined <= MAX_INLINE_PREVIEWS else None
        return None if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")

    return render(view, results, fmt, inline, full_photo=full_photo)


def render_index(jobs: Iterable[tuple[JobView, str | None]], vocabulary: Iterable[str], jobs_url: str) -> str:
    """A served folder's front page: a form starting a job (its classes suggested from `vocabulary`), and the
    jobs (each with when it was undone, if it was), newest first, each linking to its page."""
    ordered = sorted(jobs, key=lambda job: job[0]["created_at"], reverse=True)
    return _environment().get_template("index.html").render(jobs=ordered, vocabulary=list(vocabulary),
                                                            jobs_url=jobs_url)
