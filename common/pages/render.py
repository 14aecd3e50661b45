"""The HTML pages, from the Jinja2 templates beside this module (autoescape on: names and classes are data)."""
from __future__ import annotations

import base64
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jinja2
from markupsafe import Markup

from common.domain.corrections import added_elsewhere, placed
from common.domain.examples import MEANING_MASS, synset_word
from common.domain.results import ImageResult
from common.domain.status import JobView
from common.pages.exports import export_csv, export_jsonl, relative

FORMATS = {"html": "text/html; charset=utf-8", "csv": "text/csv; charset=utf-8",
           "jsonl": "application/x-ndjson; charset=utf-8"}
FIRST_PAGE = 120  # photos rendered per section at load; a file keeps the rest in <template>s until asked for
PAGE = 240
SERVED_FIGURES = 360  # a served page's first figures, shared by its sections (~1 KB each): its size whatever the job's
SERVED_PAGE = 120  # photos a served page fetches per "show more" or search


def served_first_page(sections: int) -> int:
    """How many photos each section of a served page shows at load: at least 12, at most FIRST_PAGE."""
    return max(12, min(FIRST_PAGE, SERVED_FIGURES // max(1, sections)))
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


def _detected(result: ImageResult, class_name: str, min_score: float) -> dict[str, Any] | None:
    detection = result.detections.get(class_name)
    # A person's detection may carry a lower threshold with the classifier's evidence for it (domain/people.py).
    return detection if detection and detection["score"] >= detection.get("threshold", min_score) else None


def _why(result: ImageResult, class_name: str, view: JobView) -> tuple[float, Markup]:
    """Why the photo is in the class, and the score that says so: its similarity to the class's examples against the
    class's threshold (and the model's probability under the examples' meaning), the classifier's mass, the
    detector's score, or a correction."""
    kept = result.similarities
    threshold = kept.get(f"{class_name}/threshold")
    mass = kept.get(f"{class_name}/mass")
    if class_name in kept and threshold is not None and kept[class_name] >= threshold - 1e-4 and \
            (mass is None or mass >= MEANING_MASS):
        wnid = kept.get(f"{class_name}/wnid")
        if mass is not None and wnid is not None:  # the examples' meaning decided, and nearness to them
            line = Markup('<div class="score" data-why="examples">like your examples: the model sees {} in it, '
                          '{:.2f} ≥ {:.2f}</div><div class="why">and it is nearer them than this folder\'s typical '
                          'photo: {:.2f} ≥ {:.2f}</div>').format(synset_word(wnid), mass, MEANING_MASS,
                                                                kept[class_name], threshold)
            return mass, line
        line = Markup('<div class="score" data-why="examples">like your examples: {:.2f} ≥ {:.2f}</div>').format(
            kept[class_name], threshold)
        return kept[class_name], line
    score, spec = result.scores.get(class_name, 0.0), view.job.spec
    if score >= spec.min_score and score > 0.0:
        return score, Markup('<div class="score" data-why="classifier">score {:.2f} ≥ {:.2f}</div>').format(
            score, spec.min_score)
    detection = _detected(result, class_name, spec.detector_min_score)
    if detection:
        return detection["score"], Markup('<div class="score detected" data-why="detector" data-detected="{}">'
                                          'detector: {} {:.2f} ≥ {:.2f}{}</div>').format(
            detection["label"], detection["label"], detection["score"],
            detection.get("threshold", spec.detector_min_score),
            f' with {detection["evidence"]}' if "evidence" in detection else "")
    return score, Markup('<div class="score" data-why="correction">here by a correction (the model: {:.2f})</div>'
                         ).format(kept.get(class_name, score))


def _score_line(result: ImageResult, class_name: str, view: JobView) -> Markup:
    """Why the photo is in the class; the detector's match too when the classifier's score is what put it there."""
    line = _why(result, class_name, view)[1]
    detection = _detected(result, class_name, view.job.spec.detector_min_score)
    if detection and 'data-why="detector"' not in line:
        line += Markup('<div class="detected" data-detected="{}">detector: {} {:.2f}</div>').format(
            detection["label"], detection["label"], detection["score"])
    return line + _added_line(result, view)


def _added_line(result: ImageResult, view: JobView) -> Markup:
    """Where corrections added the photo outside the job's classes (those have no section of their own)."""
    spec = view.job.spec
    elsewhere = added_elsewhere(result, spec.classes) if not spec.dry_run else []
    return Markup('<div class="why" data-added="{}">added to {} (a correction)</div>').format(
        " ".join(elsewhere), ", ".join(copy.split("/", 1)[0] for copy in elsewhere)) if elsewhere else Markup("")


def _closest_score(result: ImageResult) -> float | None:
    return max(result.scores.values()) if result.scores else None


def _closest_line(result: ImageResult, view: JobView) -> Markup:
    return _closest(result) + _added_line(result, view)


def _closest(result: ImageResult) -> Markup:
    line = Markup("")
    if result.scores:
        name, score = max(result.scores.items(), key=lambda item: item[1])
        line = Markup('<div class="score">closest: {} {:.2f}</div>').format(name, score)
    taught = {name: value - result.similarities[f"{name}/threshold"] for name, value in result.similarities.items()
              if "/" not in name and f"{name}/threshold" in result.similarities}
    if taught:  # a class taught by examples: how far the photo is from what it needed
        name = max(taught, key=lambda n: taught[n])
        similarity, threshold = result.similarities[name], result.similarities[f"{name}/threshold"]
        mass = result.similarities.get(f"{name}/mass")
        if taught[name] < -1e-4:
            line += Markup('<div class="why">like your {} examples: {:.2f} &lt; {:.2f}</div>').format(
                name, similarity, threshold)
        elif mass is not None and mass < MEANING_MASS:
            line += Markup('<div class="why">like your {} examples ({:.2f} ≥ {:.2f}), but the model sees {} in it '
                           'only {:.2f} &lt; {:.2f}</div>').format(
                name, similarity, threshold, synset_word(result.similarities.get(f"{name}/wnid", 0.0)), mass,
                MEANING_MASS)
        else:
            line += Markup('<div class="why">like your {} examples ({:.2f} ≥ {:.2f}), but nearer another class or '
                           'said not to be one</div>').format(name, similarity, threshold)
    if line:
        return line
    return Markup('<div class="score">top: {}</div>').format(result.labels[0].name if result.labels else "?")


@dataclass(frozen=True)
class PageSection:
    """A section as the page shows it: which (attribute, value) names it, its key for the server, title and
    meaning, the results it shows (all of them in a file; the first page on a served page) and how many it has."""

    attribute: str
    value: str
    key: str
    title: str
    meaning: str
    results: list[ImageResult]
    total: int


def _titles(view: JobView) -> dict[str, tuple[str, str, str, str]]:
    """Each section key: (attribute, value, title, meaning)."""
    resolved, spec = view.extra.get("resolved", {}), view.job.spec
    titles = {f"class:{name}": ("data-class", name, name, "; ".join(resolved.get(name, [])) or
                                f"match rule: {spec.match.value}") for name in spec.classes}
    titles["section:unmatched"] = ("data-section", "unmatched", "Matched no class",
                                   "each photo's closest class and its score")
    titles["section:failed"] = ("data-section", "failed", "Failed", "could not be classified, and why")
    return titles


def page_sections(view: JobView, pages: Iterable[tuple[str, list[ImageResult], int]]) -> list[PageSection]:
    """(key, results shown, total) per section -> the sections as the page shows them."""
    titles = _titles(view)
    return [PageSection(*titles[key][:2], key, *titles[key][2:], results, total) for key, results, total in pages]


def every_result(view: JobView, results: Iterable[ImageResult]) -> list[PageSection]:
    """Every result in its sections (a file: self-contained)."""
    ordered = sorted(results, key=lambda r: r.name)
    classes, by_copies = view.job.spec.classes, view.by_copies  # where corrections put a photo, it is shown
    members = {f"class:{name}": [r for r in ordered if placed(r, name, by_copies)] for name in classes}
    members["section:unmatched"] = [r for r in ordered if r.ok and not any(
        placed(r, name, by_copies) for name in classes)]
    members["section:failed"] = [r for r in ordered if not r.ok]
    return page_sections(view, ((key, chosen, len(chosen)) for key, chosen in members.items()))


def _context(view: JobView, thumbnail: ThumbnailSource, corrections_url: str | None,
             full_photo: FullPhotoSource | None) -> dict[str, Any]:
    """What the figures need: the template helpers over this job."""
    least, prefix = view.job.spec.detector_min_score, view.job.spec.source_prefix
    return dict(view=view, thumbnail=thumbnail, relative=lambda name: relative(name, prefix),
                top_labels=_top_labels, score_line=lambda r, c: _score_line(r, c, view),
                closest_line=lambda r: _closest_line(r, view),
                class_score=lambda r, c: _why(r, c, view)[0],
                closest_score=_closest_score, full_photo=full_photo or (lambda name: None),
                matched_box=lambda r, c: tuple(d["box"]) if (d := _detected(r, c, least)) else None,
                reason_line=lambda r: Markup('<div class="reason">{}</div>').format(r.reason),
                corrections_url=corrections_url)


def render_report(view: JobView, sections: list[PageSection], thumbnail: ThumbnailSource,
                  refresh_seconds: int | None = None, corrections_url: str | None = None,
                  full_photo: FullPhotoSource | None = None, undo_url: str | None = None,
                  results_url: str | None = None, left_out: int = 0) -> str:
    """The page; `results_url`: served, its other pages fetched from there as they are asked for."""
    spec = view.job.spec
    where = spec.source_prefix if spec.bucket == "local" else f"gs://{spec.bucket}/{spec.source_prefix}"
    return _environment().get_template("report.html").render(
        **_context(view, thumbnail, corrections_url, full_photo), sections=sections, where=where,
        warnings=[*view.extra.get("warnings", []), *view.job.errors], refresh_seconds=refresh_seconds,
        undo_url=undo_url, results_url=results_url, first_page=FIRST_PAGE, page_size=SERVED_PAGE if results_url
        else PAGE, left_out=left_out,
        inline_limit=MAX_INLINE_PREVIEWS)


def render_figures(view: JobView, section: str, results: Iterable[ImageResult], thumbnail: ThumbnailSource,
                   corrections_url: str | None = None, full_photo: FullPhotoSource | None = None) -> str:
    """One page of a section's figures, as the served page adds them (the same markup as the page's own)."""
    module = _environment().get_template("figures.html").make_module(
        _context(view, thumbnail, corrections_url, full_photo))
    return "".join(str(module.in_section(section, result)) for result in results)  # type: ignore[attr-defined]


def render(view: JobView, results: Iterable[ImageResult], fmt: str, thumbnail: ThumbnailSource,
           live: bool = False, corrections_url: str | None = None, full_photo: FullPhotoSource | None = None,
           undo_url: str | None = None, sections: list[PageSection] | None = None,
           results_url: str | None = None) -> tuple[str, str]:
    """(content type, body) of a job's page or export; a served page of a job in progress refreshes itself, one
    that can take corrections (`corrections_url`) has them on each photo, and one with `undo_url` an undo button.
    A served page is given its first `sections` (and where to fetch more) instead of every result."""
    if fmt == "csv":
        return FORMATS[fmt], export_csv(view, results)
    if fmt == "jsonl":
        return FORMATS[fmt], export_jsonl(view, results)
    refresh = REFRESH_SECONDS if live and view.state.in_progress else None
    return FORMATS[fmt], render_report(view, sections if sections is not None else every_result(view, results),
                                       thumbnail, refresh, corrections_url, full_photo, undo_url, results_url)


MAX_INLINE_PREVIEWS = 3000  # a file carries previews inline (~5 KB each): past this, names only (a quick file)


def render_file(view: JobView, results: Iterable[ImageResult], fmt: str,
                preview: Callable[[str, Box | None], bytes | None],
                full_photo: FullPhotoSource | None = None) -> tuple[str, str]:
    """A page to keep as a file: previews inline as data URIs, so it opens from disk with no server; each links
    to its full photo where `full_photo` says where that is from the file. Past MAX_INLINE_PREVIEWS figures the
    file says plainly that the rest have no preview, and how to see them all."""
    if fmt != "html":
        return render(view, results, fmt, lambda name, box: None)
    sections = every_result(view, results)
    figures = sum(len(section.results) for section in sections)
    inlined = 0

    def inline(name: str, box: Box | None = None) -> str | None:
        nonlocal inlined
        inlined += 1
        data = preview(name, box) if inlined <= MAX_INLINE_PREVIEWS else None
        return None if data is None else "data:image/jpeg;base64," + base64.b64encode(data).decode("ascii")

    return FORMATS[fmt], render_report(view, sections, inline, full_photo=full_photo,
                                       left_out=max(0, figures - MAX_INLINE_PREVIEWS))


@dataclass(frozen=True)
class FrontPage:
    """What a served folder's front page shows (the index's handler answers it): the jobs, each with when it was
    undone if it was, and the classes the server teaches by example photos (`serve --examples`)."""

    jobs: Sequence[tuple[JobView, str | None]]
    taught: tuple[str, ...] = ()


def render_index(front: FrontPage, vocabulary: Iterable[str], jobs_url: str) -> str:
    """A served folder's front page: a form starting a job (its classes suggested from `vocabulary`, the classes
    taught by examples first: the server's own, then those the jobs here were taught), and the jobs newest first,
    each linking to its page."""
    ordered = sorted(front.jobs, key=lambda job: job[0].job.created_at, reverse=True)
    learned = [name for view, _ in ordered for name, _ in view.job.spec.examples]
    words = list(dict.fromkeys([*front.taught, *learned, *vocabulary]))
    return _environment().get_template("index.html").render(jobs=ordered, vocabulary=words, jobs_url=jobs_url)
