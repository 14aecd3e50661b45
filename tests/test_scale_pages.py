"""Pages that stay light (issue 31): the served results page holds one page of photos per section whatever the
job's size, and …/results serves the others (and a search's) one page at a time; the file report keeps every photo
and says plainly when previews are left out; the front page lists jobs from their kept counters."""
from __future__ import annotations

import json
import random
import re

import pytest

from common.adapters.local import FolderObjectStore, SqliteJobStore
from common.config import Settings
from common.domain.options import Backend
from common.http import create_app
from common.pages import render_file, served_first_page
from common.routes import Action
from common.usecases.job_status import JobStatus
from common.usecases.report_job import ReportJob, filtered
from tests.fakes import MemoryJobStore
from tests.test_scale_counters import CLASSES, _job, _result

SETTINGS = Settings(backend=Backend.LOCAL, bucket="local")


def _client(store, objects=None):
    status = JobStatus(store, detector=False)
    report = ReportJob(store, objects or FolderObjectStore("/nonexistent"), lambda *a, **k: None, status)
    handlers = {Action.REPORT: lambda: report, Action.STATUS: lambda: status}
    return create_app(handlers, SETTINGS).test_client()


def _filled(tmp_path, photos: int) -> tuple[SqliteJobStore, str]:
    store = SqliteJobStore(tmp_path / f"jobs-{photos}.sqlite3")
    job = _job(store)
    store.set_total(job.id, photos)
    rng = random.Random(photos)
    for index in range(photos):
        store.record_result(job.id, _result(rng, index))
    return store, job.id


def test_the_served_page_is_the_same_size_at_any_job_size(tmp_path):
    sizes = {}
    for photos in (400, 4000):
        store, job_id = _filled(tmp_path, photos)
        page = _client(store).get(f"/classification-job/{job_id}/report")
        assert page.status_code == 200
        sizes[photos] = len(page.data)
        shown = page.data.count(b"<figure")
        assert shown <= 5 * served_first_page(5) and b'data-results="/classification-job/' in page.data
        assert b'<template class="more">' not in page.data  # the rest are fetched, not carried
        assert f'data-total="{store.counters(job_id).matches["dog"]}"'.encode() in page.data
    assert shown == 5 * served_first_page(5)  # every section has more than a page at 4,000
    assert sizes[4000] < sizes[400] * 1.2 and sizes[4000] < 1_000_000


@pytest.mark.parametrize("query, score", [("", ""), ("photo-00", ""), ("beagle", "0.5"), ("", "0.25")])
def test_results_pages_are_what_filtering_every_result_shows(tmp_path, query, score):
    store, job_id = _filled(tmp_path, 700)
    client = _client(store)
    for section in [f"class:{c}" for c in CLASSES] + ["section:unmatched", "section:failed"]:
        expected = filtered(store.results(job_id), section, query, float(score) if score else None, len("all/"),
                            CLASSES, True)
        names, offset = [], 0
        while True:
            answer = client.get(f"/classification-job/{job_id}/results", query_string={
                "section": section, "offset": offset, "limit": 50, "q": query, "score": score})
            assert answer.status_code == 200, answer.data
            body = answer.get_json()
            assert body["total"] == len(expected) and body["count"] <= 50
            names += re.findall(r'<figure data-file="([^"]+)"', body["html"])
            offset += body["count"]
            if not body["count"]:
                break
        assert names == [r.name[len("all/"):] for r in expected]


def test_the_same_pages_over_a_store_without_an_index(tmp_path):
    """Stores without results_page (the fakes, Firestore) are filtered in the use case, by the same rule."""
    sqlite, job_id = _filled(tmp_path, 200)
    memory = MemoryJobStore()
    memory.create_job(sqlite.get_job(job_id))
    for result in sqlite.results(job_id):
        memory.record_result(job_id, result)
    for store in (sqlite, memory):
        answer = _client(store).get(f"/classification-job/{job_id}/results?section=class:dog&q=b/&limit=7&offset=3")
        assert answer.status_code == 200
        expected = filtered(sqlite.results(job_id), "class:dog", "b/", None, 4, CLASSES, True)
        assert answer.get_json()["total"] == len(expected)
    assert _client(sqlite).get(f"/classification-job/{job_id}/results?section=class:dog&offset=3").get_json() == \
        _client(memory).get(f"/classification-job/{job_id}/results?section=class:dog&offset=3").get_json()


@pytest.mark.parametrize("query", ["section=class:nothing", "section=class:dog&limit=0", "section=class:dog&limit=121",
                                   "section=class:dog&offset=-1", "section=class:dog&score=2",
                                   "section=class:dog&score=nan", "section=class:dog&offset=x", ""])
def test_a_page_asked_for_wrongly_is_a_400_naming_the_parameter(tmp_path, query):
    store, job_id = _filled(tmp_path, 10)
    answer = _client(store).get(f"/classification-job/{job_id}/results?{query}")
    assert answer.status_code == 400 and answer.get_json()["field"] in ("section", "limit", "offset", "score")


def test_a_file_report_says_when_previews_are_left_out_and_how_to_see_them(tmp_path, monkeypatch):
    import importlib

    render_module = importlib.import_module("common.pages.render")

    store, job_id = _filled(tmp_path, 60)
    status = JobStatus(store, detector=False)
    report = ReportJob(store, FolderObjectStore("/nonexistent"), lambda *a, **k: None, status)(job_id)
    monkeypatch.setattr(render_module, "MAX_INLINE_PREVIEWS", 20)
    _, page = render_file(report.view, report.results, "html", lambda name, box: b"jpeg")
    figures = page.count("<figure")
    assert page.count("data:image/jpeg;base64,") == 20 and figures >= 60
    assert f"the other {figures - 20} are listed by name only" in page and "imgclassify serve DIR" in page
    _, small = render_file(report.view, report.results[:5], "html", lambda name, box: b"jpeg")
    assert "left-out" not in small


def test_the_jobs_listing_reads_counters_not_results(tmp_path):
    from common.usecases.runner import ListJobs

    store, job_id = _filled(tmp_path, 300)
    store.results = lambda job: (_ for _ in ()).throw(AssertionError("every result read"))  # type: ignore
    kept = ListJobs(store, FolderObjectStore(tmp_path))(with_copies=True)
    assert kept[0].view.counters.processed + kept[0].view.counters.failed == 300
    assert kept[0].copies_made == store.copies_written(job_id)
    json.dumps([k.copies_made for k in kept])
