"""Counters kept, not counted (issue 31): SQLite keeps each job's counts as its results are recorded, forgotten,
claimed and released, equal at every step to what counting the results says; a database from before is counted
once by its migration; a page of a section is read by an index and agrees with filtering every result."""
from __future__ import annotations

import dataclasses
import json
import random
import sqlite3

import pytest
from hypothesis import given, settings, strategies as st

from common.adapters.local import SqliteJobStore
from common.adapters.local.sqlite import MIGRATIONS
from common.domain.jobs import JobRecord, JobSpec, new_job_id
from common.domain.results import Counters, ImageResult, Label

CLASSES = ("dog", "cat", "food")


def _job(store: SqliteJobStore, watch: bool = False) -> JobRecord:
    job = JobRecord(new_job_id(), JobSpec(classes=CLASSES, bucket="local", watch=watch), None, "2024-01-01T00:00:00")
    store.create_job(job)
    return job


def _result(rng: random.Random, index: int) -> ImageResult:
    name = f"all/{rng.choice('abc')}/photo-{index:05d}.jpg"
    if rng.random() < 0.15:
        return ImageResult.failure(name, "cannot decode", retryable=rng.random() < 0.5)
    matched = tuple(c for c in CLASSES if rng.random() < 0.3)
    scores = {c: round(rng.random(), 4) for c in CLASSES}
    copies = tuple(f"{c}/{name[4:]}" for c in matched)
    return ImageResult(name, True, matched, (Label(rng.randrange(1000), rng.choice(["beagle", "tabby"]), 0.5),),
                       scores=scores, copies=copies, written=copies, content=f"md5:{index}",
                       prediction=rng.choice(["model", "store", "recomputed"]),
                       corrected=tuple(c for c in CLASSES if rng.random() < 0.2))


def recount(store: SqliteJobStore, job_id: str) -> Counters:
    """What the counters must be: the results added up, as every status read used to."""
    total = Counters()
    for result in store.results(job_id):
        total.add(Counters.of(result))
    return total


def _same(kept: Counters, counted: Counters) -> None:
    assert (kept.processed, kept.failed, kept.unmatched, kept.from_store, kept.recomputed, kept.matches) == \
           (counted.processed, counted.failed, counted.unmatched, counted.from_store, counted.recomputed,
            counted.matches)
    assert kept.corrected == {c: n for c, n in counted.corrected.items() if n}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), steps=st.lists(st.sampled_from(["record", "again", "forget", "release",
                                                                    "claim"]), max_size=60))
def test_kept_counters_equal_the_results_counted_after_any_sequence(tmp_path_factory, seed, steps):
    rng = random.Random(seed)
    store = SqliteJobStore(tmp_path_factory.mktemp("db") / "jobs.sqlite3")
    job = _job(store)
    recorded: list[ImageResult] = []
    for index, step in enumerate(steps):
        if step == "record" or not recorded:
            recorded.append(_result(rng, index))
            assert store.record_result(job.id, recorded[-1])
        elif step == "again":  # a redelivery: counted once
            assert not store.record_result(job.id, rng.choice(recorded))
        elif step == "forget":
            forgotten = set(store.forget_retryable_failures(job.id))
            recorded = [r for r in recorded if r.name not in forgotten]
        else:
            result = store.result(job.id, rng.choice(recorded).name)
            if result is not None and step == "release" and result.copies:
                store.release_copy(job.id, result.name, result.copies[0])
            elif result is not None and step == "claim":
                store.claim_copy(job.id, result.name, f"dog/extra-{index}.jpg", True, "1:2:3")
        _same(store.counters(job.id), recount(store, job.id))
        assert store.done_count(job.id) == len(list(store.results(job.id)))
        assert store.copies_written(job.id) == sum(len(r.written) for r in store.results(job.id))
    store.close()


def test_arrivals_and_the_latest_result_are_kept(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    job = _job(store, watch=True)
    assert store.register_arrival(job.id, "all/a.jpg") and not store.register_arrival(job.id, "all/a.jpg")
    assert store.register_arrival(job.id, "all/b.jpg")
    store.record_result(job.id, ImageResult("all/a.jpg", True, ("dog",), scores={"dog": 0.9}))
    counters = store.counters(job.id)
    assert counters.arrived == 2 and counters.last_result_at and counters.matches == {"dog": 1}
    assert store.counters("no-such-job") == Counters()


def _old_database(path, rng: random.Random, jobs: int = 3, per_job: int = 40) -> dict[str, list[ImageResult]]:
    """A database as the release before kept it (migrations up to 7), with results inserted the way it did."""
    db = sqlite3.connect(path, isolation_level=None)
    for number in range(7):
        MIGRATIONS[number](db)
    db.execute("PRAGMA user_version = 7")
    made: dict[str, list[ImageResult]] = {}
    for _ in range(jobs):
        job_id = new_job_id()
        db.execute("INSERT INTO jobs (id, spec, number_of_files, created_at) VALUES (?, ?, ?, ?)",
                   (job_id, json.dumps(JobSpec(classes=CLASSES, bucket="local").to_dict()), per_job, "2024-01-01"))
        made[job_id] = [dataclasses.replace(_result(rng, i), corrected=()) for i in range(per_job)]  # not kept then
        for result in made[job_id]:
            db.execute("INSERT INTO results (job_id, name, ok, payload, recorded_at) VALUES (?, ?, ?, ?, ?)",
                       (job_id, result.name, int(result.ok), json.dumps(result.to_dict()), "2024-01-01T00:00:01"))
        db.execute("INSERT INTO arrivals VALUES (?, 'all/x.jpg')", (job_id,))
    db.close()
    return made


def test_the_migration_counts_the_jobs_recorded_before(tmp_path):
    made = _old_database(tmp_path / "jobs.sqlite3", random.Random(7))
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    for job_id, results in made.items():
        kept = store.counters(job_id)
        _same(kept, recount(store, job_id))
        assert kept.arrived == 1 and kept.last_result_at == "2024-01-01T00:00:01"
        assert store.done_count(job_id) == len({r.name for r in results})
        for section in [f"class:{c}" for c in CLASSES] + ["section:unmatched", "section:failed"]:
            page, total = store.results_page(job_id, section, 0, 1000)
            assert [r.name for r in page] == [r.name for r in _filtered(store, job_id, section)]
            assert total == len(page)
    store.close()


def _filtered(store: SqliteJobStore, job_id: str, section: str, query: str = "",
              least: float | None = None) -> list[ImageResult]:
    """A section filtered as the page's script did, over every result."""
    chosen = []
    for result in sorted(store.results(job_id), key=lambda r: r.name):
        if section.startswith("class:"):
            member, score = result.ok and section[6:] in result.matched, result.scores.get(section[6:], 0)
        elif section == "section:unmatched":
            member, score = result.ok and not result.matched, max(result.scores.values(), default=None)
        else:
            member, score = not result.ok, None
        text = (result.name[4:] + "\n" + ", ".join(label.name for label in result.labels[:3])).lower()
        if member and query.lower() in text and (least is None or (score is not None and score >= least)):
            chosen.append(result)
    return chosen


@pytest.mark.parametrize("query, least", [("", None), ("photo-0001", None), ("BEAGLE", None), ("", 0.5),
                                          ("b/", 0.25), ("all/", None)])
def test_a_page_of_a_section_is_what_filtering_every_result_shows(tmp_path, query, least):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    job = _job(store)
    rng = random.Random(3)
    for index in range(300):
        store.record_result(job.id, _result(rng, index))
    for section in [f"class:{c}" for c in CLASSES] + ["section:unmatched", "section:failed"]:
        expected = [r.name for r in _filtered(store, job.id, section, query, least)]
        pages = [store.results_page(job.id, section, offset, 25, query, least, skip=4)
                 for offset in range(0, 300, 25)]
        assert [r.name for page, _ in pages for r in page] == expected
        assert {total for _, total in pages} == {len(expected)}
    assert store.results_page(job.id, "section:nothing", 0, 10) == ([], 0)
    store.close()


def test_results_are_committed_in_groups_but_a_copy_written_is_committed_before_it_returns(tmp_path):
    writer, other = SqliteJobStore(tmp_path / "jobs.sqlite3"), SqliteJobStore(tmp_path / "jobs.sqlite3")
    job = _job(writer)
    assert writer.record_result(job.id, ImageResult("all/a.jpg", True, scores={"dog": 0.1}))
    assert not writer.record_result(job.id, ImageResult("all/a.jpg", True))  # waiting counts as recorded
    assert writer.done_count(job.id) == 1 and other.done_count(job.id) == 0  # not committed yet
    copied = ImageResult("all/b.jpg", True, ("dog",), copies=("dog/b.jpg",), written=("dog/b.jpg",))
    assert writer.record_result(job.id, copied)
    assert other.done_count(job.id) == 2 and other.copies_written(job.id) == 1  # with what was waiting
    assert writer.record_result(job.id, ImageResult("all/c.jpg", False, reason="x"))
    assert writer.counters(job.id).failed == 1 and other.counters(job.id).failed == 1  # a read commits first
    assert writer.record_result(job.id, ImageResult("all/d.jpg", True))
    writer.close()
    assert other.counters(job.id).processed == 3 and len(list(other.results(job.id))) == 4
    other.close()


def test_results_are_stored_compactly_and_read_back_exactly_in_either_form(tmp_path):
    from common.adapters.local.result_rows import db_name as _db_name, decode as _decode, encode as _encode
    from common.domain.labels import imagenet_classes

    rng = random.Random(11)
    names = imagenet_classes()
    odd = ImageResult("all/caf\udce9.jpg", True, ("dog",), (Label(207, names[207].name, 0.5), Label(3, "person", 0.25)),
                      scores={"dog": 0.5}, copies=("dog/a.jpg", "dog/b.jpg"), written=("dog/b.jpg",),
                      identities={"dog/b.jpg": "1:2:3"}, content="md5:x", prediction="store")
    results = [_result(rng, i) for i in range(200)] + [odd]
    results = [r if r is odd else dataclasses.replace(r, labels=tuple(Label(l.index, names[l.index].name, l.score)
                                                                     for l in r.labels)) for r in results]
    results.append(dataclasses.replace(odd, name="all/taught.jpg", similarities={"roses": 0.71, "roses:threshold": 0.6},
                                       detections={"people": {"label": "person", "score": 0.8, "box": [0, 0, 1, 1]}},
                                       corrected=("dog",), retryable=False, reason=""))
    for result in results:
        stored = _db_name(result.name)
        assert _decode(stored, _encode(result)) == result
        assert _decode(stored, json.dumps(result.to_dict())) == result  # rows written before
    compact = sum(len(_encode(r)) for r in results) / len(results)
    before = sum(len(json.dumps(r.to_dict())) for r in results) / len(results)
    assert compact < 0.6 * before
