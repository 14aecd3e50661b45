"""Watch jobs and completion events (issue 12), on the in-memory fakes: arrivals counted once per job, several
watch jobs each get every arrival, closing completes, completion announced exactly once, callbacks signed,
retried with backoff and given up without blocking, bad callback URLs refused."""
from __future__ import annotations

import json
import threading

import pytest

from common.domain.errors import InvalidRequest, TransientError
from common.domain.jobs import JobDefaults
from common.domain.requests import parse_job_request
from common.pubsub import handle_object_event
from common.usecases.announce_completion import SIGNATURE_HEADER, signature
from common.config import Settings
from tests.fakes import ListEvents, RecordingCallbacks, fake_app, solid_jpeg


class Watched:
    """The fakes, built by the composition root as the cloud is: announce after each recorded image and on close,
    with a job-events topic and a callback receiver that record what they get."""

    def __init__(self, callbacks: RecordingCallbacks | None = None, key: str = "", folder: bool = False) -> None:
        self.events = ListEvents()
        self.callbacks = callbacks or RecordingCallbacks(200)
        self.sleeps: list[float] = []
        # The cloud's store keeps no failures that may pass later (Pub/Sub redelivers); a folder's does.
        retries = {"retries": None} if not folder else {}
        self.app = fake_app(Settings(bucket="images", service_key=key), events=self.events, callbacks=self.callbacks,
                            sleep=self.sleeps.append, **retries)
        self.announce = self.app.announce
        self.arrived = self.app.object_arrived
        self.close = self.app.close_job

    def upload(self, name: str, colour: str = "red") -> None:
        self.app.objects.write("images", name, solid_jpeg(colour))

    def deliver_all(self) -> None:
        while self.app.publisher.messages:
            self.app.classify_image(self.app.publisher.messages.pop(0))


@pytest.mark.parametrize("folder", [False, True], ids=["cloud", "folder"])
def test_a_watch_job_counts_each_object_once_whether_listed_announced_or_both(folder):
    w = Watched(folder=folder)
    w.upload("all/a.jpg")
    job = w.app.create_job({"classes": ["tabby"], "watch": True})
    assert (job.state, job.number_of_files) == ("watching", 1)

    w.upload("all/b.jpg")
    for name in ("all/a.jpg", "all/b.jpg", "all/b.jpg", "other/c.jpg", "tabby/a.jpg"):  # listed, twice, elsewhere
        w.arrived("images", name)
    w.deliver_all()

    status = w.app.job_status(job.id)
    assert (status.number_of_files, status.counters.processed, status.state, status.complete) == (
        2, 2, "watching", False)
    assert w.events.events == []  # still open: nothing announced


def test_several_watch_jobs_on_one_bucket_each_get_every_arrival():
    w = Watched()
    first = w.app.create_job({"classes": ["tabby"], "watch": True})
    second = w.app.create_job({"classes": ["macaw"], "watch": True})
    w.upload("all/x.jpg", "blue")
    assert sorted(w.arrived("images", "all/x.jpg")) == sorted([first.id, second.id])
    w.deliver_all()
    assert [w.app.job_status(j.id).number_of_files for j in (first, second)] == [1, 1]


def test_closing_completes_the_job_once_its_images_are_done_and_announces_it_once():
    w = Watched()
    job = w.app.create_job({"classes": ["tabby"], "watch": True, "callback_url": "https://receiver.example/done"})
    w.upload("all/a.jpg")
    w.arrived("images", "all/a.jpg")

    closed = w.close(job.id)  # an image still in flight: not complete yet
    assert (closed.state, closed.complete) == ("running", False) and w.events.events == []
    w.deliver_all()
    w.close(job.id)  # closing again changes nothing
    w.announce(job.id)  # nor does a late redelivery's check

    assert w.app.job_status(job.id).state == "complete"
    assert w.events.events == [{"job_id": job.id, "state": "complete", "number_of_files": 1, "processed": 1,
                                "failed": 0, "matches": {"tabby": 1}}]
    assert len(w.callbacks.posts) == 1
    assert w.app.job_status(job.id).job.callback == {"status": "delivered", "attempts": 1, "http_status": 200}
    assert w.arrived("images", "all/late.jpg") == []  # a closed job takes no arrivals


def test_a_batch_job_is_announced_exactly_once_however_its_last_images_race():
    w = Watched()
    for i in range(40):
        w.upload(f"all/{i}.jpg")
    job = w.app.create_job({"classes": ["tabby"]})
    messages = list(w.app.publisher.messages) * 3  # every message delivered three times, concurrently
    threads = [threading.Thread(target=w.app.classify_image, args=(m,)) for m in messages]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert w.app.job_status(job.id).complete
    assert [e["job_id"] for e in w.events.events] == [job.id]


def test_an_empty_job_is_announced_when_created():
    w = Watched()
    job = w.app.create_job({"classes": ["tabby"], "source_prefix": "nothing/"})
    assert job.complete and [e["job_id"] for e in w.events.events] == [job.id]


def test_the_callback_is_signed_with_the_service_key():
    w = Watched(key="s3cret")
    w.upload("all/a.jpg")
    w.app.create_job({"classes": ["tabby"], "callback_url": "https://receiver.example/hook"})
    w.deliver_all()
    [(url, body, headers)] = w.callbacks.posts
    assert url == "https://receiver.example/hook" and json.loads(body)["complete"] is True
    assert headers[SIGNATURE_HEADER] == signature(body, "s3cret")


def test_the_signature_is_hmac_sha256_as_receivers_verify_it():
    # RFC 4231, test case 2: a receiver's own HMAC-SHA256 gives this for key "Jefe".
    assert signature(b"what do ya want for nothing?", "Jefe") == \
        "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


@pytest.mark.parametrize("answers, outcome, attempts", [
    ((500, 503, 200), "delivered", 3),
    ((TransientError("timed out"), TransientError("timed out"), TransientError("timed out"),
      TransientError("timed out")), "failed", 4),
    ((404,), "failed", 1),  # the receiver refuses it: not retried
])
def test_a_failing_callback_is_retried_with_backoff_then_given_up_and_recorded(answers, outcome, attempts):
    w = Watched(RecordingCallbacks(*answers))
    w.upload("all/a.jpg")
    job = w.app.create_job({"classes": ["tabby"], "callback_url": "https://receiver.example/hook"})
    w.deliver_all()

    status = w.app.job_status(job.id)
    assert status.complete and status.counters.processed == 1  # classification never waits on the receiver's fate
    assert (status.job.callback["status"], status.job.callback["attempts"]) == (outcome, attempts)
    assert w.sleeps == [1.0, 2.0, 4.0][:attempts - 1]


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "javascript:alert(1)", "http://",
                                 "gopher://h/", 42, "http://exa mple.com/\n"])
def test_a_callback_url_that_is_not_http_is_refused(url):
    with pytest.raises(InvalidRequest) as error:
        parse_job_request({"classes": ["dog"], "callback_url": url}, JobDefaults("images"))
    assert error.value.field == "callback_url"


def _notification(event_type: str, name: str, bucket: str = "images", md5: str = "abc=") -> dict:
    import base64

    data = base64.b64encode(json.dumps({"name": name, "bucket": bucket, "md5Hash": md5}).encode()).decode()
    return {"message": {"attributes": {"eventType": event_type, "bucketId": bucket, "objectId": name},
                        "data": data, "messageId": "1"}}


def test_storage_notifications_other_than_finalize_or_malformed_are_dropped():
    seen = []
    handler = lambda: lambda bucket, name, content: seen.append((bucket, name, content)) or []  # noqa: E731
    pubsub = "google.cloud.pubsub.topic.v1.messagePublished"
    handle_object_event(pubsub, "1", _notification("OBJECT_DELETE", "all/a.jpg"), handler)
    handle_object_event(pubsub, "2", _notification("OBJECT_METADATA_UPDATE", "all/a.jpg"), handler)
    handle_object_event(pubsub, "3", {"message": {"data": "e30="}}, handler)
    handle_object_event("some.other.event", "4", _notification("OBJECT_FINALIZE", "all/a.jpg"), handler)
    handle_object_event(pubsub, "5", _notification("OBJECT_FINALIZE", "all/a.jpg"), handler)
    assert seen == [("images", "all/a.jpg", "md5:abc=")]
