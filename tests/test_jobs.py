import pytest

from common.domain.errors import InvalidRequest
from datetime import datetime

from common.domain.jobs import (HIERARCHY_MIN_SCORE, JobDefaults, JobRecord, JobSpec, is_job_id, new_job_id,
                                shard_for, target_name)
from common.domain.requests import parse_job_request
from common.domain.status import status_view
from common.domain.results import Counters

DEFAULTS = JobDefaults(bucket="images")


def parse(body):
    return parse_job_request(body, DEFAULTS).spec


def test_minimal_request_gets_defaults():
    spec = parse({"classes": ["dog", "truck"]})
    assert spec == JobSpec(classes=("dog", "truck"), bucket="images", source_prefix="all/", top_k=5,
                           min_score=HIERARCHY_MIN_SCORE, match="hierarchy")


def test_duplicate_classes_are_merged_case_insensitively_keeping_first_spelling():
    assert parse({"classes": ["Dog", "dog", " DOG ", "cat"], "top_k": 5}).classes == ("Dog", "cat")


def test_source_prefix_gets_a_trailing_slash():
    assert parse({"classes": ["dog"], "source_prefix": "photos/2024"}).source_prefix == "photos/2024/"


@pytest.mark.parametrize("body, field", [
    ([], "body"),
    ("dog", "body"),
    ({}, "classes"),
    ({"classes": []}, "classes"),
    ({"classes": "dog"}, "classes"),
    ({"classes": [1]}, "classes"),
    ({"classes": [""]}, "classes"),
    ({"classes": ["a/b"]}, "classes"),
    ({"classes": ["a\\b"]}, "classes"),
    ({"classes": [".."]}, "classes"),
    ({"classes": [".hidden"]}, "classes"),
    ({"classes": ["tab\there"]}, "classes"),
    ({"classes": ["x" * 65]}, "classes"),
    ({"classes": [f"c{i}" for i in range(33)]}, "classes"),
    ({"classes": ["dog"], "colour": "red"}, "colour"),
    ({"classes": ["dog"], "top_k": 0}, "top_k"),
    ({"classes": ["dog"], "top_k": True}, "top_k"),
    ({"classes": ["dog"], "top_k": "5"}, "top_k"),
    ({"classes": ["dog"], "min_score": 1.5}, "min_score"),
    ({"classes": ["dog"], "min_score": float("nan")}, "min_score"),
    ({"classes": ["dog"], "source_prefix": "../etc/"}, "source_prefix"),
    ({"classes": ["dog"], "source_prefix": "/abs/"}, "source_prefix"),
    ({"classes": ["dog"], "source_prefix": "all/../../"}, "source_prefix"),
    ({"classes": ["dog"], "bucket": "UPPER"}, "bucket"),
    ({"classes": ["dog"], "match": "regex"}, "match"),
])
def test_invalid_requests_name_the_field(body, field):
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    assert caught.value.field == field
    assert caught.value.to_json()["field"] == field


def test_job_ids_are_random_uuid_hex_and_validated():
    first, second = new_job_id(), new_job_id()
    assert first != second and is_job_id(first)
    assert not is_job_id("../../etc/passwd")


def test_target_name_keeps_the_path_under_the_source_prefix():
    assert target_name("dog", "all/2024/rex.jpg", "all/") == "dog/2024/rex.jpg"


def test_shards_are_stable_and_spread():
    names = [f"all/{i}.jpg" for i in range(1000)]
    shards = [shard_for(n, 16) for n in names]
    assert shards == [shard_for(n, 16) for n in names]
    assert len(set(shards)) == 16


def _job(total):
    return JobRecord("a" * 32, JobSpec(("dog", "cat"), "images"), total, "2026-01-01T00:00:00Z")


def test_status_counts_failed_images_towards_completion():
    view = status_view(_job(4), Counters(processed=2, failed=1, matches={"dog": 2}))
    assert (view.complete, view.percentage, view.remaining) == (False, 75, 1)
    assert view.matches == {"dog": 2, "cat": 0}
    done = status_view(_job(4), Counters(processed=3, failed=1))
    assert (done.complete, done.percentage, done.state) == (True, 100, "complete")


def test_percentage_never_reaches_100_before_completion():
    assert status_view(_job(1000), Counters(processed=999)).percentage == 99


def test_empty_job_is_complete_at_once():
    view = status_view(_job(0), Counters())
    assert view.complete is True and view.percentage == 100


def test_min_score_defaults_follow_the_match_rule():
    assert parse({"classes": ["dog"], "match": "substring"}).min_score == 0.0
    assert parse({"classes": ["dog"], "match": "label"}).min_score == 0.0
    assert parse_job_request({"classes": ["dog"]}, JobDefaults("images", min_score=0.5)).spec.min_score == 0.5
    assert parse({"classes": ["dog"], "min_score": 0.7}).min_score == 0.7


def test_a_job_still_listing_is_not_complete():
    job = JobRecord("a" * 32, JobSpec(("dog",), "images"), None, "2026-01-01T00:00:00+00:00")
    view = status_view(job, Counters(processed=3), now=datetime.fromisoformat("2026-01-01T00:01:00+00:00"))
    assert (view.complete, view.percentage, view.state, view.number_of_files) == (False, 0, "listing", 3)


def test_a_listing_abandoned_past_the_deadline_says_it_failed_and_how_to_resume():
    job = JobRecord("a" * 32, JobSpec(("dog",), "images"), None, "2026-01-01T00:00:00+00:00", request_id="r1")
    view = status_view(job, Counters(processed=3), now=datetime.fromisoformat("2026-01-01T01:00:00+00:00"))
    assert (view.state, view.complete) == ("failed", False) and "same request_id" in view.error


def test_a_job_whose_fan_out_was_interrupted_is_failed_with_its_reason_not_complete():
    job = JobRecord("a" * 32, JobSpec(("dog",), "images"), None, "2026-01-01T00:00:00+00:00",
                    error="fan-out interrupted")
    view = status_view(job, Counters())
    assert (view.state, view.complete, view.error) == ("failed", False, "fan-out interrupted")


def test_request_ids_name_one_job_and_are_validated():
    assert new_job_id("client-42") == new_job_id("client-42") != new_job_id("client-43")
    assert is_job_id(new_job_id("client-42"))
    assert parse_job_request({"classes": ["dog"], "request_id": "a.b:c-1_2"}, DEFAULTS).request_id == "a.b:c-1_2"
    for bad in ("", "x" * 129, "has space", 7, "new\nline"):
        with pytest.raises(InvalidRequest) as error:
            parse_job_request({"classes": ["dog"], "request_id": bad}, DEFAULTS)
        assert error.value.field == "request_id"


def test_a_job_id_with_a_trailing_newline_is_rejected():
    assert not is_job_id("a" * 32 + "\n")
