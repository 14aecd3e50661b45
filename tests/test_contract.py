"""One contract for every adapter of each port: in-memory fakes, local (folder, SQLite, thread pool) and GCP
(fake-gcs-server, Firestore and Pub/Sub emulators; marked `emulator`)."""
from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.domain.errors import ObjectMissing, PermanentImageError
from common.domain.jobs import JobRecord, JobSpec, new_job_id
from common.domain.results import ImageResult, Label
from common.domain.messages import ClassifyMessage
from common.domain.predictions import content_fingerprint
from common.ports import Copied, Removal
from tests.fakes import ListPublisher, MemoryJobStore, MemoryObjectStore, MemoryPredictionStore

BACKENDS = ["memory", "local", pytest.param("gcp", marks=pytest.mark.emulator)]


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=BACKENDS)
def object_store(request, tmp_path) -> Iterator[tuple[object, str]]:
    if request.param == "memory":
        yield MemoryObjectStore(), "images"
    elif request.param == "local":
        from common.adapters.local import FolderObjectStore

        yield FolderObjectStore(tmp_path), "images"
    else:
        request.getfixturevalue("emulators")
        from common.adapters.gcp import GcsObjectStore, storage_client

        client = storage_client("local-project")
        bucket = _unique("contract")
        client.create_bucket(bucket)
        yield GcsObjectStore(client), bucket


@pytest.fixture(params=BACKENDS)
def job_store(request, tmp_path) -> Iterator[object]:
    if request.param == "memory":
        yield MemoryJobStore()
    elif request.param == "local":
        from common.adapters.local import SqliteJobStore

        store = SqliteJobStore(tmp_path / "jobs.sqlite3")
        yield store
        store.close()
    else:
        request.getfixturevalue("emulators")
        from google.cloud import firestore

        from common.adapters.gcp import FirestoreJobStore

        yield FirestoreJobStore(firestore.Client(project="local-project"), _unique("jobs"), shards=4)


@dataclass
class PublisherUnderTest:
    publisher: object
    received: Callable[[int], list[ClassifyMessage]]


@pytest.fixture(params=BACKENDS)
def publisher(request) -> Iterator[PublisherUnderTest]:
    if request.param == "memory":
        fake = ListPublisher()
        yield PublisherUnderTest(fake, lambda expected: list(fake.messages))
    elif request.param == "local":
        from common.adapters.local import InProcessQueue

        queue = InProcessQueue(workers=2)
        got: list[ClassifyMessage] = []
        lock = threading.Lock()

        def handler(message: ClassifyMessage) -> None:
            with lock:
                got.append(message)

        queue.subscribe(handler)

        def received(expected: int) -> list[ClassifyMessage]:
            assert queue.join(timeout=30)
            return list(got)

        yield PublisherUnderTest(queue, received)
        queue.shutdown()
    else:
        request.getfixturevalue("emulators")
        from google.cloud import pubsub_v1

        from common.adapters.gcp import PubSubPublisher

        client = PubSubPublisher.make_client()
        topic = client.topic_path("local-project", _unique("topic"))
        client.create_topic(name=topic)
        subscriber = pubsub_v1.SubscriberClient()
        subscription = subscriber.subscription_path("local-project", _unique("sub"))
        subscriber.create_subscription(name=subscription, topic=topic)

        def received(expected: int) -> list[ClassifyMessage]:
            got: list[ClassifyMessage] = []
            for _ in range(50):
                response = subscriber.pull(subscription=subscription, max_messages=1000, timeout=10)
                if response.received_messages:
                    subscriber.acknowledge(subscription=subscription,
                                           ack_ids=[m.ack_id for m in response.received_messages])
                got.extend(ClassifyMessage.from_bytes(m.message.data) for m in response.received_messages)
                if len(got) >= expected:
                    break
            return got

        yield PublisherUnderTest(PubSubPublisher(client, topic), received)
        subscriber.close()


# --- ObjectStore ------------------------------------------------------------------------------------------------

def test_objects_list_recursively_under_a_prefix_only(object_store):
    store, bucket = object_store
    for name in ("all/a.jpg", "all/sub/b.png", "alltogether.jpg", "dog/c.jpg"):
        store.write(bucket, name, b"x")
    assert sorted(store.list_names(bucket, "all/")) == ["all/a.jpg", "all/sub/b.png"]


def test_exists_says_whether_an_object_is_there(object_store):
    store, bucket = object_store
    store.write(bucket, "dog/a.jpg", b"x")
    assert store.exists(bucket, "dog/a.jpg") and not store.exists(bucket, "dog/b.jpg")


def test_listing_an_empty_prefix_yields_nothing(object_store):
    store, bucket = object_store
    assert list(store.list_names(bucket, "all/")) == []


def test_listing_pages_through_many_objects(object_store):
    store, bucket = object_store
    names = [f"all/{i:04d}.jpg" for i in range(1203)]
    for name in names:
        store.write(bucket, name, b"")
    assert sorted(store.list_names(bucket, "all/")) == names


def test_copy_keeps_the_original_and_is_made_once(object_store):
    store, bucket = object_store
    store.write(bucket, "all/x/y.jpg", b"photo bytes")
    made = store.copy(bucket, "all/x/y.jpg", "dog/x/y.jpg")
    assert (made.name, made.written, bool(made.identity)) == ("dog/x/y.jpg", True, True)
    assert store.copy(bucket, "all/x/y.jpg", "dog/x/y.jpg") == Copied("dog/x/y.jpg", written=False)
    assert store.read(bucket, "dog/x/y.jpg") == b"photo bytes"
    assert store.read(bucket, "all/x/y.jpg") == b"photo bytes"


def test_removal_needs_the_very_copy_written_not_one_with_the_same_bytes(object_store):
    store, bucket = object_store
    store.write(bucket, "all/a.jpg", b"photo bytes")
    made = store.copy(bucket, "all/a.jpg", "dog/a.jpg")
    content = content_fingerprint(b"photo bytes")
    store.write(bucket, "dog/a.jpg", b"photo bytes")  # replaced by another file holding the same bytes
    assert store.remove(bucket, "dog/a.jpg", content, made.identity) == Removal.CHANGED
    again = store.copy(bucket, "all/a.jpg", "cat/a.jpg")
    assert store.remove(bucket, "cat/a.jpg", content, again.identity) == Removal.REMOVED


def test_copy_never_replaces_other_bytes_it_keeps_both(object_store):
    store, bucket = object_store
    store.write(bucket, "cats/IMG_0001.jpg", b"the user's own notes")
    store.write(bucket, "all/IMG_0001.jpg", b"a cat")
    store.write(bucket, "other/IMG_0001.jpg", b"another cat")

    first = store.copy(bucket, "all/IMG_0001.jpg", "cats/IMG_0001.jpg")
    again = store.copy(bucket, "all/IMG_0001.jpg", "cats/IMG_0001.jpg")  # a redelivery finds its own copy
    second = store.copy(bucket, "other/IMG_0001.jpg", "cats/IMG_0001.jpg")  # another job, same name

    assert first == Copied("cats/IMG_0001 (1).jpg", written=True)
    assert again == Copied("cats/IMG_0001 (1).jpg", written=False)
    assert second == Copied("cats/IMG_0001 (2).jpg", written=True)
    assert store.read(bucket, "cats/IMG_0001.jpg") == b"the user's own notes"
    assert store.read(bucket, "cats/IMG_0001 (1).jpg") == b"a cat"
    assert store.read(bucket, "cats/IMG_0001 (2).jpg") == b"another cat"


def test_an_object_over_the_size_limit_is_refused_and_an_empty_one_reads_as_empty(object_store):
    store, bucket = object_store
    store.max_bytes = 10
    store.write(bucket, "all/big.mp4", b"x" * 11)
    store.write(bucket, "all/limit.jpg", b"y" * 10)
    store.write(bucket, "all/empty.jpg", b"")
    with pytest.raises(PermanentImageError, match="limit"):
        store.read(bucket, "all/big.mp4")
    assert store.read(bucket, "all/limit.jpg") == b"y" * 10 and store.read(bucket, "all/empty.jpg") == b""


def test_reading_or_copying_a_missing_object_raises_object_missing(object_store):
    store, bucket = object_store
    with pytest.raises(ObjectMissing):
        store.read(bucket, "all/none.jpg")
    with pytest.raises(ObjectMissing):
        store.copy(bucket, "all/none.jpg", "dog/none.jpg")


# --- JobStore ---------------------------------------------------------------------------------------------------

def _job(total: int = 3) -> JobRecord:
    return JobRecord(new_job_id(), JobSpec(("dog", "musical instrument"), "images"), total,
                     "2026-11-27T00:00:00.000+00:00")


def test_jobs_round_trip_and_unknown_ids_are_none(job_store):
    job = JobRecord(new_job_id("req-1"), JobSpec(("dog",), "images"), 3, "2026-11-27T00:00:00.000+00:00",
                    request_id="req-1")
    assert job_store.create_job(job) is True
    assert job_store.get_job(job.id) == job
    assert job_store.get_job(new_job_id()) is None


def test_creating_a_job_that_exists_changes_nothing(job_store):
    job = _job()
    assert job_store.create_job(job) is True
    assert job_store.create_job(JobRecord(job.id, JobSpec(("cat",), "images"), None, job.created_at)) is False
    assert job_store.get_job(job.id) == job


def test_a_failure_is_recorded_and_cleared_when_the_total_is_set(job_store):
    job = JobRecord(new_job_id(), JobSpec(("dog",), "images"), None, "2026-11-27T00:00:00.000+00:00")
    job_store.create_job(job)
    job_store.mark_failed(job.id, "fan-out interrupted")
    assert job_store.get_job(job.id).error == "fan-out interrupted"
    job_store.set_total(job.id, 7)
    assert (job_store.get_job(job.id).error, job_store.get_job(job.id).number_of_files) == (None, 7)


def test_job_errors_are_recorded_once_each(job_store):
    job = _job()
    job_store.create_job(job)
    for message in ("no weights", "no weights", "permission denied"):
        job_store.record_job_error(job.id, message)
    assert job_store.get_job(job.id).errors == ("no weights", "permission denied")


def test_a_result_is_counted_exactly_once(job_store):
    job = _job()
    job_store.create_job(job)
    result = ImageResult("all/a.jpg", True, ("dog", "musical instrument"), (Label(207, "golden retriever", 0.9),),
                         copies=("dog/a.jpg", "musical instrument/a.jpg"), corrected=("dog",))

    assert job_store.record_result(job.id, result) is True
    assert job_store.record_result(job.id, result) is False

    job_store.record_result(job.id, ImageResult("all/b.jpg", False, reason="truncated"))
    job_store.record_result(job.id, ImageResult("all/c.jpg", True, (), (Label(88, "macaw", 0.9),),
                                                prediction="store"))
    counters = job_store.counters(job.id)
    assert (counters.processed, counters.failed, counters.unmatched, counters.from_store) == (2, 1, 1, 1)
    assert counters.matches == {"dog": 1, "musical instrument": 1}
    assert counters.corrected == {"dog": 1}  # placed by a person's correction: kept like the matches
    assert sorted(r.name for r in job_store.results(job.id)) == ["all/a.jpg", "all/b.jpg", "all/c.jpg"]
    assert [r for r in job_store.results(job.id) if r.name == "all/a.jpg"] == [result]
    assert job_store.result(job.id, "all/a.jpg") == result and job_store.result(job.id, "all/zz.jpg") is None


def test_claimed_and_released_copies_change_a_results_manifest_and_nothing_else(job_store):
    job = _job()
    job_store.create_job(job)
    result = ImageResult("all/a.jpg", True, ("dog",), (Label(207, "golden retriever", 0.9),), copies=("dog/a.jpg",),
                         written=("dog/a.jpg",))
    job_store.record_result(job.id, result)
    assert job_store.claim_copy(job.id, "all/a.jpg", "roses/a.jpg", written=True)
    assert job_store.release_copy(job.id, "all/a.jpg", "dog/a.jpg")
    assert not job_store.release_copy(job.id, "all/a.jpg", "dog/a.jpg")  # released once, by one caller
    changed = job_store.result(job.id, "all/a.jpg")
    assert (changed.copies, changed.written, changed.matched) == (("roses/a.jpg",), ("roses/a.jpg",), ("dog",))
    assert job_store.counters(job.id).matches == {"dog": 1}  # the model's answer and its counts stay
    assert not job_store.claim_copy(job.id, "all/missing.jpg", "x/missing.jpg", written=True)


def test_concurrent_duplicate_results_count_once(job_store):
    job = _job(40)
    job_store.create_job(job)
    names = [f"all/{i}.jpg" for i in range(20)]

    def record(name: str) -> None:
        job_store.record_result(job.id, ImageResult(name, True, ("dog",)))

    threads = [threading.Thread(target=record, args=(n,)) for n in names * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    counters = job_store.counters(job.id)
    assert (counters.processed, counters.matches) == (20, {"dog": 20})


def test_the_total_is_set_after_listing(job_store):
    job = JobRecord(new_job_id(), JobSpec(("dog",), "images"), None, "2026-11-27T00:00:00.000+00:00")
    job_store.create_job(job)
    assert job_store.get_job(job.id).number_of_files is None
    job_store.set_total(job.id, 1234)
    assert job_store.get_job(job.id).number_of_files == 1234


def test_a_jobs_pending_images_are_re_published_once_until_the_recorded_time_is_old_enough(job_store):
    job = _job()
    job_store.create_job(job)
    t = "2026-11-27T00:0{}:00.000+00:00".format
    assert job_store.get_job(job.id).republished_at is None
    assert job_store.claim_republish(job.id, at=t(5), since=t(0))
    assert job_store.get_job(job.id).republished_at == t(5)
    assert not job_store.claim_republish(job.id, at=t(6), since=t(1))  # re-published after `since`: refused
    assert job_store.get_job(job.id).republished_at == t(5) and job_store.get_job(job.id).number_of_files == 3
    assert job_store.claim_republish(job.id, at=t(9), since=t(5))  # not after: claimed
    assert job_store.get_job(job.id).republished_at == t(9)
    assert not job_store.claim_republish(new_job_id(), at=t(9), since=t(5))  # no such job


def test_concurrent_re_publish_claims_let_exactly_one_through(job_store):
    job = _job()
    job_store.create_job(job)
    claimed: list[bool] = []
    start = threading.Barrier(6)

    def claim() -> None:
        start.wait()
        claimed.append(job_store.claim_republish(job.id, "2026-11-27T00:10:00.000+00:00",
                                                 "2026-11-27T00:05:00.000+00:00"))

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == [False] * 5 + [True]


def test_counters_of_a_job_without_results_are_zero(job_store):
    job = _job()
    job_store.create_job(job)
    counters = job_store.counters(job.id)
    assert (counters.processed, counters.failed, counters.unmatched, counters.matches) == (0, 0, 0, {})


def test_jobs_are_found_by_a_shortened_id(job_store):
    first, second = _job(), _job()
    for job in (first, second):
        job_store.create_job(job)
    assert job_store.job_ids_with_prefix(first.id[:6], limit=2) == [first.id]
    assert job_store.job_ids_with_prefix(first.id, limit=2) == [first.id]
    assert job_store.job_ids_with_prefix("g" * 6, limit=2) == []


def test_latest_job_is_the_newest(job_store):
    first, second = _job(), _job()
    job_store.create_job(first)
    job_store.create_job(JobRecord(second.id, second.spec, 1, "2026-11-28T00:00:00.000+00:00"))
    assert job_store.latest_job_id() == second.id


# --- PredictionStore --------------------------------------------------------------------------------------------

@pytest.fixture(params=BACKENDS)
def prediction_store(request, tmp_path) -> Iterator[object]:
    if request.param == "memory":
        yield MemoryPredictionStore()
    elif request.param == "local":
        from common.adapters.local import SqlitePredictionStore

        yield SqlitePredictionStore(tmp_path / "jobs.sqlite3")
    else:
        request.getfixturevalue("emulators")
        from google.cloud import firestore

        from common.adapters.gcp_predictions import FirestorePredictionStore

        yield FirestorePredictionStore(firestore.Client(project="local-project"), _unique("predictions"))


def test_predictions_round_trip_by_model_and_content(prediction_store):
    blob = bytes(range(256)) * 16
    assert prediction_store.get("resnet50/litert/a.tflite/abc/p1", "md5:x") is None
    prediction_store.put("resnet50/litert/a.tflite/abc/p1", "md5:x", blob)
    assert prediction_store.get("resnet50/litert/a.tflite/abc/p1", "md5:x") == blob
    assert prediction_store.get("resnet50/keras/b.h5/def/p1", "md5:x") is None  # another build's: never used
    assert prediction_store.get("resnet50/litert/a.tflite/abc/p1", "md5:y") is None


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stored=st.sets(st.integers(0, 40), max_size=12), asked=st.lists(st.integers(0, 40), max_size=30))
def test_predictions_read_together_are_those_read_one_by_one(prediction_store, monkeypatch, stored, asked):
    """Duplicates, misses, another build's entries and more contents than one batched read holds: the batched
    read answers exactly what one read per photo would."""
    from common.adapters.local import predictions

    monkeypatch.setattr(predictions, "LOOKUP_BATCH", 7)  # batches cross at a few photos, not only at hundreds
    if "Firestore" in type(prediction_store).__name__:
        from common.adapters import gcp_predictions

        monkeypatch.setattr(gcp_predictions, "GET_ALL_BATCH", 7)
    model = f"m/{_unique('build')}"
    for number in stored:
        prediction_store.put(model, f"md5:{number}", f"entry {number}".encode())
        prediction_store.put(f"{model}-other", f"md5:{number + 1}", b"another build's")
    contents = [f"md5:{number}" for number in asked]
    expected = {c: blob for c in contents if (blob := prediction_store.get(model, c)) is not None}
    assert prediction_store.get_many(model, contents) == expected

@pytest.fixture(params=BACKENDS)
def corrections(request, tmp_path) -> Iterator[object]:
    if request.param == "memory":
        from tests.fakes import MemoryCorrections

        yield MemoryCorrections()
    elif request.param == "local":
        from common.adapters.local import SqlitePredictionStore

        yield SqlitePredictionStore(tmp_path / "jobs.sqlite3")
    else:
        request.getfixturevalue("emulators")
        from google.cloud import firestore

        from common.adapters.gcp_corrections import FirestoreCorrections

        yield FirestoreCorrections(firestore.Client(project="local-project"), _unique("corrections"))


def test_corrections_are_kept_per_bucket_and_word_and_the_latest_wins(corrections):
    corrections.record_correction("b", "roses", "md5:1", True)
    corrections.record_correction("b", "roses", "md5:2", False)
    corrections.record_correction("b", "tulips", "md5:1", False)
    corrections.record_correction("other", "roses", "md5:3", True)
    corrections.record_correction("b", "roses", "md5:2", True)  # changed their mind
    assert corrections.corrections("b", "roses") == {"md5:1": True, "md5:2": True}
    assert corrections.corrections("b", "tulips") == {"md5:1": False}
    assert corrections.corrections("b", "daisy") == {}
    assert corrections.corrected_words("b") == ["roses", "tulips"]
    assert corrections.forget_correction("b", "roses", "md5:1") and not corrections.forget_correction(
        "b", "roses", "md5:1")
    assert corrections.corrections("b", "roses") == {"md5:2": True}


def test_removing_a_copy_checks_its_content_first(object_store):
    from common.domain.predictions import content_fingerprint

    store, bucket = object_store
    store.write(bucket, "dog/a.jpg", b"the copy")
    store.write(bucket, "dog/b.jpg", b"changed by the user")
    assert store.remove(bucket, "dog/a.jpg", content_fingerprint(b"the copy")) == "removed"
    assert store.remove(bucket, "dog/b.jpg", content_fingerprint(b"the copy")) == "changed"
    assert store.remove(bucket, "dog/c.jpg", content_fingerprint(b"the copy")) == "missing"
    assert sorted(store.list_names(bucket, "dog/")) == ["dog/b.jpg"]


def test_listings_carry_a_content_fingerprint_only_when_it_is_the_photos_md5(object_store):
    from common.domain.predictions import content_fingerprint

    store, bucket = object_store
    store.write(bucket, "all/a.jpg", b"photo")
    [listed] = list(store.list_objects(bucket, "all/"))
    assert listed.name == "all/a.jpg" and listed.content in (None, content_fingerprint(b"photo"))


# --- Publisher --------------------------------------------------------------------------------------------------

def test_every_published_message_is_delivered(publisher):
    spec = JobSpec(("dog",), "images")
    job_id = new_job_id()
    messages = [ClassifyMessage(job_id, f"all/{i}.jpg", spec) for i in range(250)]

    assert publisher.publisher.publish_all(iter(messages)) == 250
    received = publisher.received(250)
    assert sorted(m.name for m in received) == sorted(m.name for m in messages)
    assert all(m.job_id == job_id and m.spec == spec for m in received)


# --- Watch jobs and completion (JobWriter) -----------------------------------------------------------------------

def test_arrivals_count_once_and_only_open_watch_jobs_are_listed(job_store):
    watch = JobRecord(new_job_id(), JobSpec(("dog",), "images", watch=True), None, "2026-11-27T00:00:00.000+00:00")
    batch = _job()
    job_store.create_job(watch)
    job_store.create_job(batch)
    assert [j.id for j in job_store.watch_jobs("images")] == [watch.id] and job_store.watch_jobs("other") == []
    assert [job_store.register_arrival(watch.id, n) for n in ("all/a.jpg", "all/b.jpg", "all/a.jpg")] == [
        True, True, False]
    assert job_store.counters(watch.id).arrived == 2
    job_store.close_job(watch.id)
    assert job_store.get_job(watch.id).closed and job_store.watch_jobs("images") == []


def test_completion_is_claimed_once_and_results_are_counted(job_store):
    job = _job(2)
    job_store.create_job(job)
    job_store.record_result(job.id, ImageResult("all/a.jpg", True))
    assert job_store.counters(job.id).processed == 1 and job_store.counters(job.id).last_result_at
    job_store.record_result(job.id, ImageResult("all/b.jpg", False, reason="broken"))
    assert job_store.done_count(job.id) == 2
    assert [job_store.claim_completion(job.id) for _ in range(3)] == [True, False, False]
    job_store.record_callback(job.id, {"status": "delivered", "attempts": 1})
    assert job_store.get_job(job.id).callback == {"status": "delivered", "attempts": 1}
