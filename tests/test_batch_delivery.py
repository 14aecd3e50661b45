"""The embedded queue's batched delivery (issue 31): a few messages per delivery, their stored answers read together.
Whatever a batch leaves unfinished or however it fails, every message is handled, and the backlog counts messages."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from common.adapters.local import InProcessQueue
from common.adapters.local import queue as queue_module
from common.domain.errors import TransientError
from common.domain.jobs import JobSpec
from common.domain.messages import ClassifyMessage


def _messages(count: int) -> list[ClassifyMessage]:
    spec = JobSpec(classes=("dogs",), bucket="local")
    return [ClassifyMessage(job_id="job", name=f"all/{i}.jpg", spec=spec) for i in range(count)]


class Handlers:
    """A batch handler leaving some messages unfinished (or failing whole), and the one-by-one handler after it,
    whose first tries of some messages raise TransientError."""

    def __init__(self, unfinished: set[int], batch_fails: bool, transient: set[int]) -> None:
        self.unfinished, self.batch_fails, self.transient = unfinished, batch_fails, transient
        self.finished: Counter[str] = Counter()
        self.lock = threading.Lock()

    def batch(self, messages: Sequence[ClassifyMessage]) -> list[ClassifyMessage]:
        if self.batch_fails:
            raise RuntimeError("the shared read failed")
        left = [m for m in messages if int(m.name[4:-4]) in self.unfinished]
        with self.lock:
            self.finished.update(m.name for m in messages if m not in left)
        return left

    def one(self, message: ClassifyMessage) -> None:
        number = int(message.name[4:-4])
        with self.lock:
            if number in self.transient:
                self.transient.discard(number)
                raise TransientError("try again")
            self.finished[message.name] += 1


@settings(max_examples=40, deadline=None)
@given(count=st.integers(0, 150), unfinished=st.sets(st.integers(0, 149)), transient=st.sets(st.integers(0, 149)),
       batch_fails=st.booleans(), size=st.integers(1, 70))
def test_every_message_is_handled_exactly_once_however_batches_end(count, unfinished, transient, batch_fails, size):
    original = queue_module.BATCH
    queue_module.BATCH = size  # batches of every size against every count, not only the production one
    try:
        handlers = Handlers(unfinished, batch_fails, transient)
        queue = InProcessQueue(workers=2, backoff=0.0)
        queue.subscribe(handlers.one, batch=handlers.batch)
        assert queue.publish_all(iter(_messages(count))) == count
        assert queue.join(timeout=30)
        assert queue.backlog() == 0
        queue.shutdown()
    finally:
        queue_module.BATCH = original
    assert handlers.finished == Counter(m.name for m in _messages(count))  # each once, none lost


def test_the_backlog_counts_messages_not_deliveries():
    release = threading.Event()
    seen: list[int] = []

    def batch(messages: Sequence[ClassifyMessage]) -> list[ClassifyMessage]:
        seen.append(len(messages))
        release.wait(10)
        return []

    queue = InProcessQueue(workers=1)
    queue.subscribe(lambda message: None, batch=batch)
    queue.publish_all(_messages(queue_module.BATCH * 2 + 5))
    assert queue.backlog() == queue_module.BATCH * 2 + 5  # what admission compares with its limit of images
    release.set()
    assert queue.join(timeout=10) and queue.backlog() == 0
    assert seen == [queue_module.BATCH, queue_module.BATCH, 5]
    queue.shutdown()


def test_a_batch_answers_as_messages_one_by_one_would_and_refuses_what_no_job_sent():
    """Stored answers read together decide exactly what one-by-one deliveries decide; a forged message, another
    prefix's object and a duplicate in the same batch count for nothing."""
    from dataclasses import replace

    from tests.fakes import fake_app, solid_jpeg

    app = fake_app()
    for name, colour in {"cat.jpg": "red", "bird.jpg": "blue", "sea.jpg": "green", "dup.jpg": "red"}.items():
        app.objects.write("images", f"all/{name}", solid_jpeg(colour))
    first = app.create_job({"classes": ["animal"], "dry_run": True}).id
    for message in list(app.publisher.messages):  # fills the store, one by one
        app.classify_image(message)
    calls = app.classifier.calls

    one_by_one = app.create_job({"classes": ["tabby", "macaw", "lake"]}).id
    for message in [m for m in app.publisher.messages if m.job_id == one_by_one]:
        app.classify_image(message)
    batched = app.create_job({"classes": ["tabby", "macaw", "lake"], "request_id": "batched"}).id
    messages = [m for m in app.publisher.messages if m.job_id == batched]
    forged = replace(messages[0], name="all/../secret.jpg")
    unsigned = replace(messages[0], name="all/sea.jpg", sig="0" * 64)
    assert app.classify_image.deliver_batch([*messages, forged, unsigned, messages[1]]) == []

    assert app.classifier.calls == calls  # every answer came from the store
    answers = {r.name: (r.matched, r.labels, r.scores) for r in app.jobs.results(one_by_one)}
    assert {r.name: (r.matched, r.labels, r.scores) for r in app.jobs.results(batched)} == answers
    assert app.jobs.counters(batched).processed == 4 and first != batched
