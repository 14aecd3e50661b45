"""The copy manifest's compare-and-set contract, on the fakes, SQLite and the Firestore emulator: concurrent
claims, releases and undo never lose a copy from the manifest, never release one twice, and an undone job takes
nothing new."""
from __future__ import annotations

import threading

from common.domain.results import ImageResult
from tests.test_contract import _job, job_store  # noqa: F401 - the fixture, over every backend


def _run_all(targets) -> None:
    threads = [threading.Thread(target=target) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def test_concurrent_claims_on_one_photo_keep_every_copy(job_store):  # noqa: F811
    job = _job()
    job_store.create_job(job)
    job_store.record_result(job.id, ImageResult("all/a.jpg", True, content="md5:x"))
    classes = [f"class{i}" for i in range(24)]
    claimed: list[bool] = []
    _run_all([lambda c=c: claimed.append(job_store.claim_copy(job.id, "all/a.jpg", f"{c}/a.jpg", True))
              for c in classes])
    result = job_store.result(job.id, "all/a.jpg")
    assert all(claimed) and sorted(result.written) == sorted(f"{c}/a.jpg" for c in classes)
    assert sorted(result.copies) == sorted(result.written)


def test_a_copy_is_released_to_exactly_one_of_many_concurrent_callers(job_store):  # noqa: F811
    job = _job()
    job_store.create_job(job)
    job_store.record_result(job.id, ImageResult("all/a.jpg", True, copies=("dog/a.jpg", "cat/a.jpg"),
                                                written=("dog/a.jpg", "cat/a.jpg")))
    released: list[bool] = []
    _run_all([lambda: released.append(job_store.release_copy(job.id, "all/a.jpg", "dog/a.jpg"))] * 12)
    assert released.count(True) == 1
    assert job_store.result(job.id, "all/a.jpg").written == ("cat/a.jpg",)


def test_an_undone_job_takes_no_new_copy_and_is_undone_once(job_store):  # noqa: F811
    job = _job()
    job_store.create_job(job)
    job_store.record_result(job.id, ImageResult("all/a.jpg", True))
    outcomes: list[bool] = []
    _run_all([lambda: outcomes.append(job_store.record_undo(job.id, "2026-01-01T00:00:00"))] * 6)
    assert outcomes.count(True) == 1 and job_store.undone_at(job.id) == "2026-01-01T00:00:00"
    assert not job_store.claim_copy(job.id, "all/a.jpg", "dog/a.jpg", True)
    assert job_store.result(job.id, "all/a.jpg").copies == ()
    assert job_store.undone_at("f" * 32) is None
