"""Reliability on the embedded backends (folder, SQLite, in-process queue): duplicates out of order, poison
images, transient and permanent errors. The emulator versions are in tests/test_reliability_emulator.py."""
from __future__ import annotations

import random
import threading
from collections import Counter

import pytest
from google.api_core import exceptions as gexc

from common.adapters.gcp import GcsObjectStore
from common.adapters.local import FolderObjectStore, InProcessQueue, SqliteJobStore
from common.bootstrap.application import Application
from common.bootstrap.local import LocalApplication
from common.bootstrap.ports import Inference
from common.config import Settings
from common.domain.errors import ConfigurationError, TransientError
from common.domain.messages import ClassifyMessage
from common.domain.options import Backend
from common.inference.decoding import decode_image
from tests.fakes import FakeClassifier, ListPublisher, memory_ports, solid_jpeg
from tests.poison import poison_files



class CountingFolder(FolderObjectStore):
    def __init__(self, root, fail_reads: int = 0, error: Exception | None = None) -> None:
        super().__init__(root)
        self.copies_made: Counter[str] = Counter()
        self.reads_to_fail = fail_reads
        self.error = error or TransientError("storage unavailable")
        self._lock = threading.Lock()

    def copy(self, bucket, source, target, content=None):
        made = super().copy(bucket, source, target, content)
        with self._lock:
            self.copies_made[made.name] += made.written
        return made

    def read(self, bucket, name):
        with self._lock:
            if self.reads_to_fail:
                self.reads_to_fail -= 1
                raise self.error
        return super().read(bucket, name)


class Embedded:
    """The embedded use cases over a folder, built by the composition root, with a counting store and a fake
    model; `publisher` is where create_job publishes (a queue, or a list the test delivers from itself)."""

    def __init__(self, tmp_path, publisher, **store_options) -> None:
        self.store = CountingFolder(tmp_path, **store_options)
        self.jobs = SqliteJobStore(tmp_path / ".imgclassify/jobs.sqlite3")
        self.classifier = FakeClassifier()
        settings = Settings(backend=Backend.LOCAL, local_root=str(tmp_path), bucket="local")
        # With a prediction store, as production has: a redelivery is answered from it, not by the model.
        ports = memory_ports(objects=self.store, publisher=publisher, jobs=self.jobs, retries=self.jobs,
                             inference=Inference(classifier=lambda: self.classifier, model_key="fake-model",
                                                 decode=decode_image, detector=None, detector_key=None))
        # Delivered by the queue as the CLI's runner is (a message it gives up on is the image's failure, with the
        # reason), or held for the test to deliver.
        app = LocalApplication(settings, ports, publisher).start() if isinstance(publisher, InProcessQueue) else \
            Application(settings, ports)
        self.create_job, self.status, self.classify = app.create_job, app.job_status, app.classify_image


def embedded(tmp_path, **store_options):
    queue = InProcessQueue(workers=4, backoff=0.01)
    service = Embedded(tmp_path, queue, **store_options)
    return service, queue, service.store, service.classifier


def test_every_message_three_times_out_of_order_counts_once(tmp_path):
    service, queue, store, classifier = embedded(tmp_path)
    colours = ["red", "green", "blue"] * 20
    for i, colour in enumerate(colours):
        store.write("local", f"all/{i:03d}.jpg", solid_jpeg(colour))
    job = service.create_job({"classes": ["tabby", "golden retriever", "macaw", "animal"]})
    record = service.jobs.get_job(job.id)
    messages = [ClassifyMessage.for_job(record, f"all/{i:03d}.jpg") for i in range(len(colours))]
    duplicates = messages * 2
    random.Random(7).shuffle(duplicates)

    queue.publish_all(duplicates)
    assert queue.join(timeout=60)

    status = service.status(job.id)
    assert (status.counters.processed, status.counters.failed, status.complete) == (60, 0, True)
    assert status.matches == {"tabby": 20, "golden retriever": 20, "macaw": 20, "animal": 60}
    assert sum(store.copies_made.values()) == 120 and set(store.copies_made.values()) == {1}
    # A duplicate that arrives while its original is still in a worker's hands may reach the model again (and is
    # then not counted); one that arrives later finds the stored prediction. 60 distinct photos in 3 colours: the
    # store answers by content, so most photos never reach the model at all.
    assert 3 <= classifier.calls < 60


def test_poison_images_fail_with_reasons_or_classify_and_the_job_completes(tmp_path, shared):
    service, queue, store, _ = embedded(tmp_path)
    files = poison_files(shared / "photos/coral/cat_720p.jpg")
    for name, (data, _) in files.items():
        store.write("local", f"all/{name}", data)

    job = service.create_job({"classes": ["animal"]})
    assert queue.join(timeout=120)

    status = service.status(job.id)
    results = {r.name.removeprefix("all/"): r for r in service.jobs.results(job.id)}
    assert status.complete and status.counters.processed + status.counters.failed == len(files)
    assert {name: ("ok" if r.ok else "failed") for name, r in results.items()} == {
        name: outcome for name, (_, outcome) in files.items()}
    assert all(r.reason for r in results.values() if not r.ok)  # a truncated one: retried, then failed, saying so


def test_transient_storage_errors_are_retried_until_the_job_completes(tmp_path):
    service, queue, store, _ = embedded(tmp_path, fail_reads=3)
    for i in range(4):
        store.write("local", f"all/{i}.jpg", solid_jpeg("red"))
    job = service.create_job({"classes": ["tabby"]})
    assert queue.join(timeout=60)
    status = service.status(job.id)
    assert (status.counters.processed, status.counters.failed, status.matches["tabby"]) == (4, 0, 4)
    assert store.reads_to_fail == 0


def held_service(tmp_path, **store_options):
    """A service whose messages are held, so a test delivers them itself."""
    publisher = ListPublisher()
    service = Embedded(tmp_path, publisher, **store_options)
    return service, service.store, publisher


def test_a_transient_error_propagates_so_pubsub_redelivers(tmp_path):
    service, store, publisher = held_service(tmp_path, fail_reads=1)
    store.write("local", "all/a.jpg", solid_jpeg("red"))
    job = service.create_job({"classes": ["tabby"]})
    [message] = publisher.messages

    with pytest.raises(TransientError):
        service.classify(message)
    assert service.status(job.id).counters.processed == 0
    service.classify(message)  # the redelivery

    assert service.status(job.id).counters.processed == 1


class FailingBlob:
    def __init__(self, error: Exception) -> None:
        self.error = error

    def download_as_bytes(self, **range_) -> bytes:
        raise self.error


class FailingStorageClient:
    """Stands in for google.cloud.storage.Client: every download raises the given API error."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def bucket(self, name):
        return self

    def blob(self, name):
        return FailingBlob(self.error)


@pytest.mark.parametrize("error, becomes", [
    (gexc.ServiceUnavailable("GCS 503"), TransientError),
    (gexc.TooManyRequests("429"), TransientError),
    (gexc.InternalServerError("500"), TransientError),
    (gexc.Forbidden("storage.objects.get denied"), ConfigurationError),
    (gexc.BadRequest("a bug"), gexc.BadRequest),
])
def test_the_gcp_adapter_decides_what_is_retryable(error, becomes):
    with pytest.raises(becomes):
        GcsObjectStore(FailingStorageClient(error)).read("bucket", "all/a.jpg")


def test_an_object_deleted_before_classification_is_a_counted_failure(tmp_path):
    service, store, publisher = held_service(tmp_path)
    store.write("local", "all/gone.jpg", solid_jpeg("red"))
    job = service.create_job({"classes": ["tabby"]})
    (tmp_path / "all/gone.jpg").unlink()

    service.classify(publisher.messages[0])

    [result] = service.jobs.results(job.id)
    assert (result.ok, result.reason) == (False, "object no longer exists")
    assert service.status(job.id).complete is True
