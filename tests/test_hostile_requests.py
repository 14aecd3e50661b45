"""Hostile requests through the HTTP layer: each is a 4xx JSON naming the problem, and nothing is written."""
from __future__ import annotations

import json

import pytest

from tests.fakes import served

LONG = "x" * 65
HOSTILE_BODIES = [
    ("not json", b"{classes: [dog]}", 400, "body"),
    ("binary", b"\xff\xfe\x00garbage", 400, "body"),
    ("json array", b'["dog"]', 400, "body"),
    ("json string", b'"dog"', 400, "body"),
    ("json null", b"null", 400, "body"),
    ("missing classes", b"{}", 400, "classes"),
    ("classes null", b'{"classes": null}', 400, "classes"),
    ("classes string", b'{"classes": "dog"}', 400, "classes"),
    ("classes object", b'{"classes": {"dog": 1}}', 400, "classes"),
    ("classes numbers", b'{"classes": [1, 2]}', 400, "classes"),
    ("classes nested", b'{"classes": [["dog"]]}', 400, "classes"),
    ("classes empty", b'{"classes": []}', 400, "classes"),
    ("class empty string", b'{"classes": [""]}', 400, "classes"),
    ("class whitespace", b'{"classes": ["   "]}', 400, "classes"),
    ("too many classes", json.dumps({"classes": [f"dog{i}" for i in range(33)]}).encode(), 400, "classes"),
    ("slash", b'{"classes": ["dog/cat"]}', 400, "classes"),
    ("backslash", b'{"classes": ["dog\\\\cat"]}', 400, "classes"),
    ("dot dot", b'{"classes": [".."]}', 400, "classes"),
    ("dot dot inside", b'{"classes": ["a..b"]}', 400, "classes"),
    ("leading dot", b'{"classes": [".ssh"]}', 400, "classes"),
    ("control char", b'{"classes": ["dog\\u0000"]}', 400, "classes"),
    ("newline", b'{"classes": ["dog\\ncat"]}', 400, "classes"),
    ("bidi control", b'{"classes": ["dog\\u202e"]}', 400, "classes"),
    ("over 64 chars", json.dumps({"classes": [LONG]}).encode(), 400, "classes"),
    ("not a word", b'{"classes": ["qwxzv"], "match": "hierarchy"}', 400, "classes"),
    ("unknown field", b'{"classes": ["dog"], "callback": "http://evil"}', 400, "callback"),
    ("top_k string", b'{"classes": ["dog"], "top_k": "5"}', 400, "top_k"),
    ("top_k float", b'{"classes": ["dog"], "top_k": 5.5}', 400, "top_k"),
    ("top_k huge", b'{"classes": ["dog"], "top_k": 1000000}', 400, "top_k"),
    ("top_k bool", b'{"classes": ["dog"], "top_k": true}', 400, "top_k"),
    ("min_score string", b'{"classes": ["dog"], "min_score": "high"}', 400, "min_score"),
    ("min_score negative", b'{"classes": ["dog"], "min_score": -0.1}', 400, "min_score"),
    ("min_score infinite", b'{"classes": ["dog"], "min_score": 1e999}', 400, "min_score"),
    ("match unknown", b'{"classes": ["dog"], "match": "regex"}', 400, "match"),
    ("bucket number", b'{"classes": ["dog"], "bucket": 7}', 400, "bucket"),
    ("bucket path", b'{"classes": ["dog"], "bucket": "a/../b"}', 400, "bucket"),
    ("prefix parent", b'{"classes": ["dog"], "source_prefix": "../"}', 400, "source_prefix"),
    ("prefix absolute", b'{"classes": ["dog"], "source_prefix": "/etc/"}', 400, "source_prefix"),
    ("prefix climbs", b'{"classes": ["dog"], "source_prefix": "all/../../"}', 400, "source_prefix"),
    ("prefix backslash", b'{"classes": ["dog"], "source_prefix": "all\\\\..\\\\"}', 400, "source_prefix"),
    ("prefix number", b'{"classes": ["dog"], "source_prefix": 3}', 400, "source_prefix"),
    ("class is the source folder", b'{"classes": ["all"]}', 400, "classes"),
    ("class is the source folder, other case", b'{"classes": ["ALL"]}', 400, "classes"),
    ("class contains the source prefix", b'{"classes": ["photos"], "source_prefix": "photos/2024/"}', 400,
     "classes"),
    ("oversized body", json.dumps({"classes": ["dog"] * 20000}).encode(), 413, "body"),
]
# Whatever its shape, an id that names no job is a 404 "Job <id> not found", as the old service answered.
HOSTILE_IDS = [
    ("traversal", "..%2F..%2Fetc%2Fpasswd", 404),
    ("too short", "abc", 404),
    ("uppercase hex", "A" * 32, 404),
    ("too long", "a" * 33, 404),
    ("sql", "1%27%20OR%20%271%27%3D%271", 404),
    ("unicode", "%E2%80%AE" * 4, 404),
    ("the old service's own test", "256", 404),
    ("unknown", "0123456789abcdef0123456789abcdef", 404),
]


@pytest.fixture
def http(fake_service):
    return served(fake_service)


@pytest.mark.parametrize("case, body, status, field", HOSTILE_BODIES, ids=[c[0] for c in HOSTILE_BODIES])
def test_hostile_bodies_are_rejected_by_field_and_nothing_is_written(http, fake_service, case, body, status, field):
    fake_service.objects.write("images", "all/a.jpg", b"x")

    response = http.post("/classification-job", data=body, content_type="application/json")

    assert response.status_code == status and response.is_json
    payload = response.get_json()
    assert payload["code"] == status and payload["field"] == field and payload["message"]
    assert fake_service.jobs.jobs == {} and fake_service.publisher.messages == []
    assert set(fake_service.objects.objects) == {("images", "all/a.jpg")}


@pytest.mark.parametrize("case, job_id, status", HOSTILE_IDS, ids=[c[0] for c in HOSTILE_IDS])
def test_hostile_job_ids_are_4xx_json(http, case, job_id, status):
    response = http.get(f"/classification-job/{job_id}")
    assert response.status_code == status and response.is_json
    assert response.get_json()["code"] == status


def test_the_old_services_own_test_of_an_unknown_job_passes(http):
    answer = http.get("/classification-job/256")
    assert answer.status_code == 404 and answer.get_json()["message"] == "Job 256 not found"


def test_a_job_is_named_by_any_unique_prefix_of_4_or_more_characters(http, fake_service):
    fake_service.objects.write("images", "all/a.jpg", b"x")
    job = http.post("/classification-job", json={"classes": ["dog"]}).get_json()
    for length in (4, 8, 31):
        answer = http.get(f"/classification-job/{job['id'][:length]}")
        assert answer.status_code == 200 and answer.get_json()["id"] == job["id"]
    assert http.get(f"/classification-job/{job['id'][:3]}").status_code == 404


def test_a_prefix_naming_several_jobs_is_a_conflict_listing_them(fake_service):
    from common.domain.errors import Conflict
    from common.domain.jobs import JobRecord, JobSpec
    from common.usecases.lookup import existing_job

    for suffix in ("0" * 28, "1" * 28):
        fake_service.jobs.create_job(JobRecord("abcd" + suffix, JobSpec(("dog",), "images"), 0, "2026-01-01"))
    with pytest.raises(Conflict) as several:
        existing_job(fake_service.jobs, "abcd")
    assert len(several.value.details["candidates"]) == 2
    assert existing_job(fake_service.jobs, "abcd1").id == "abcd" + "1" * 28


def test_duplicate_classes_are_merged_not_rejected(http, fake_service):
    response = http.post("/classification-job", json={"classes": ["dog", "Dog", " dog "], "top_k": 5})
    assert response.status_code == 201 and response.get_json()["classes"] == ["dog"]


def test_wrong_methods_and_paths_are_json(http):
    assert http.put("/classification-job").status_code == 405
    assert http.get("/classification-job").status_code == 405
    response = http.get("/admin")
    assert response.status_code == 404 and response.is_json
