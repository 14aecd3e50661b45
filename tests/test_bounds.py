"""Issue 28, bounded work: what one request or one message may make the service do. Full-size previews within the
decode budget; retries that re-publish an image at most once per delivery deadline; example folders that count
photos, not files; dead letters that count only what the job published (docs/reliability.md, "Threat model:
bounded work"). Heavier measurements are in bench/decode_memory.py."""
from __future__ import annotations

import dataclasses
import io
import math
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from common.domain.errors import InvalidRequest, Overloaded
from common.domain.jobs import DELIVERY_DEADLINE_SECONDS, is_photo_name
from common.inference import decoding
from common.inference.thumbnails import FULL_SIZE, THUMBNAIL_SIZE, make_full_photo, make_thumbnail
from common.usecases.create_job import RetryJob, example_photos
from common.usecases.runner import AdmitJob
from tests.fakes import fake_app, served, solid_jpeg


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _gradient(width: int, height: int) -> np.ndarray:
    """A photo-like RGB picture, quick to make and to compress."""
    ramp = np.add.outer(np.arange(height, dtype=np.uint32) * 255 // height, np.arange(width, dtype=np.uint32) *
                        255 // width).astype(np.uint8)
    return np.stack([ramp, ramp[::-1], ramp[:, ::-1]], axis=2)


# --- 1. Full-size previews: reduced while decoding, within the budget ---------------------------------------------
@pytest.fixture(scope="module")
def progressive_24mp() -> bytes:
    return _encoded(Image.fromarray(_gradient(6000, 4000)), "JPEG", quality=80, progressive=True)


def test_a_24_megapixel_progressive_jpeg_gets_its_full_photo_reduced_and_encoded_again(progressive_24mp):
    full = make_full_photo(progressive_24mp)
    shown = Image.open(io.BytesIO(full))
    assert shown.format == "JPEG" and shown.size == (FULL_SIZE, round(FULL_SIZE * 4000 / 6000))
    assert full != progressive_24mp
    image = Image.open(io.BytesIO(progressive_24mp))
    _, estimate, _ = decoding._opened(progressive_24mp, FULL_SIZE, preview=True)
    assert image.info.get("progressive") and estimate <= decoding.MAX_DECODED_BYTES  # decoded at half size


@pytest.mark.parametrize("mode", ["I;16", "F", "RGBA", "LA", "P", "CMYK", "1", "I"])
def test_every_mode_gives_an_rgb_full_photo_at_most_full_size_keeping_its_picture(mode):
    base = Image.new("RGB", (2600, 1700), (200, 40, 40))
    base.paste((40, 40, 200), (1300, 0, 2600, 1700))
    image = base.convert("L" if mode in ("I;16", "F", "1", "I") else mode)
    if mode in ("I;16", "F", "I"):
        dtype = {"I;16": np.uint16, "F": np.float32, "I": np.int32}[mode]
        image = Image.fromarray(np.asarray(image).astype(dtype) * 200)
    shown = Image.open(io.BytesIO(make_full_photo(_encoded(image, "TIFF" if mode in ("I;16", "F", "I", "CMYK")
                                                           else "PNG"))))
    assert shown.mode == "RGB" and max(shown.size) == FULL_SIZE
    pixels = np.asarray(shown, dtype=int)
    left, right = pixels[:, :100].mean(axis=(0, 1)), pixels[:, -100:].mean(axis=(0, 1))
    assert np.abs(left - right).sum() > 60  # the two halves are still told apart


def test_a_full_photo_over_the_budget_is_refused_naming_size_and_why_its_thumbnail_still_shown(monkeypatch):
    data = _encoded(Image.fromarray((_gradient(3000, 2000)[:, :, 0].astype(np.uint16) * 257)), "PNG")
    monkeypatch.setattr(decoding, "MAX_DECODED_BYTES", 13 * 2**20)  # 3000x2000 16-bit: 11 MB, 20 MB at 2048 px
    with pytest.raises(InvalidRequest) as refused:
        make_full_photo(data)
    assert refused.value.field == "size"
    assert "3000x2000 pixels (I;16)" in refused.value.message and "above the 13 MB budget" in refused.value.message
    assert Image.open(io.BytesIO(make_thumbnail(data))).size == (THUMBNAIL_SIZE, round(THUMBNAIL_SIZE * 2 / 3))


def test_every_preview_plan_fits_the_budget_or_is_refused_before_decoding():
    """The estimate covers each phase: a plan within the budget is chosen whenever one exists."""
    for mode, side in (("I;16", 6320), ("F", 6320), ("F", 6000), ("RGB", 6320), ("RGBA", 4000), ("P", 6320),
                       ("RGBA", 6320), ("L", 9000)):
        image = Image.new(mode, (1, 1))
        image._size = (side, side * 3 // 4)  # a header's claim: nothing is allocated
        factor, held = decoding.preview_plan(image, FULL_SIZE, image.size)
        fits = held <= decoding.MAX_DECODED_BYTES
        assert fits or factor == -(-side // FULL_SIZE), (mode, side)
        assert held >= decoding.decoded_bytes(image), (mode, side)  # never below what the decode itself holds


def test_large_previews_are_made_one_at_a_time_from_decode_to_rgb(monkeypatch):
    data = _encoded(Image.fromarray(_gradient(2600, 2600)[:, :, 0].astype(np.uint16) * 257), "PNG")
    assert decoding._opened(data, FULL_SIZE, preview=True)[1] >= decoding.LARGE_DECODE_BYTES
    active, most = [0], [0]
    lock = threading.Lock()
    convert = decoding._to_rgb

    def counted(image: Image.Image) -> Image.Image:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)
        try:
            return convert(image)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(decoding, "_to_rgb", counted)
    threads = [threading.Thread(target=make_full_photo, args=(data,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == [1]


def test_a_served_full_photo_that_cannot_be_made_is_a_json_400_never_a_500(monkeypatch):
    app = fake_app()
    app.objects.write("images", "all/cat.jpg", solid_jpeg("red"))
    app.objects.write("images", "all/junk.jpg", b"not a photo at all")
    client = served(app)
    job = client.post("/classification-job", json={"classes": ["tabby"]}).get_json()
    for message in app.publisher.messages:
        app.classify_image(message)
    base = f"/classification-job/{job['id']}/thumbnail"
    shown = client.get(base, query_string={"name": "all/cat.jpg", "size": "full"})
    assert shown.status_code == 200 and shown.headers["Content-Type"] == "image/jpeg"
    refused = client.get(base, query_string={"name": "all/junk.jpg", "size": "full"})
    assert refused.status_code == 400 and refused.is_json
    assert refused.get_json()["field"] == "size" and "not a recognised image format" in refused.get_json()["message"]


# --- 2. Retry: each image re-published at most once per delivery deadline; admitted like a new job -----------------
class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)

    def __call__(self) -> str:
        return self.now.isoformat(timespec="milliseconds")


def _job_with_lost_messages(app, photos: int = 3) -> str:
    for n in range(photos):
        app.objects.write("images", f"all/{n}.jpg", solid_jpeg("red"))
    job = app.create_job({"classes": ["tabby"]})
    app.publisher.messages.clear()  # lost: nothing will ever deliver them
    return job.id


def test_a_retry_within_the_delivery_deadline_is_a_429_saying_when_and_re_publishes_nothing():
    app = fake_app()
    job_id = _job_with_lost_messages(app)
    client = served(app)
    first = client.post(f"/classification-job/{job_id}/retry", json={})
    assert first.status_code == 200 and first.get_json()["republished"] == 3 and len(app.publisher.messages) == 3
    again = client.post(f"/classification-job/{job_id}/retry", json={})
    assert again.status_code == 429 and again.is_json and len(app.publisher.messages) == 3
    body = again.get_json()
    assert body["field"] == "id" and f"{DELIVERY_DEADLINE_SECONDS} s" in body["message"]
    wait = int(again.headers["Retry-After"])
    assert DELIVERY_DEADLINE_SECONDS - 5 <= wait <= DELIVERY_DEADLINE_SECONDS
    retry_at = datetime.fromisoformat(body["retry_at"])
    assert abs((retry_at - datetime.now(UTC)).total_seconds() - wait) < 5
    assert app.jobs.get_job(job_id).republished_at is not None


def test_replaying_a_stalled_jobs_request_re_publishes_once_per_deadline(monkeypatch):
    from common.domain import status as status_module

    app = fake_app()
    for n in range(2):
        app.objects.write("images", f"all/{n}.jpg", solid_jpeg("red"))
    body = {"classes": ["tabby"], "request_id": "replayed"}
    app.create_job(body)
    app.publisher.messages.clear()
    monkeypatch.setattr(status_module, "STALL_SECONDS", -1)
    assert app.create_job(body).extra["republished"] == 2
    assert [app.create_job(body).extra["republished"] for _ in range(5)] == [0] * 5 and len(app.publisher.messages) == 2


def test_a_retry_counts_against_the_same_admission_limit_as_a_new_job():
    app = fake_app()
    job_id = _job_with_lost_messages(app)
    retried: list[str] = []
    admit = AdmitJob(app.create_job, backlog=lambda: 500, max_queued=500,
                     retry=lambda job: retried.append(job) or app.job_status(job))
    with pytest.raises(Overloaded) as refused:
        admit.retry(job_id)
    assert refused.value.retry_after >= 1 and retried == [] and app.publisher.messages == []
    with pytest.raises(Overloaded):
        admit({"classes": ["tabby"]})
    roomy = AdmitJob(app.create_job, backlog=lambda: 0, max_queued=500,
                     retry=lambda job: retried.append(job) or app.job_status(job))
    assert roomy.retry(job_id).id == job_id and retried == [job_id]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 2 * DELIVERY_DEADLINE_SECONDS), st.booleans()), min_size=1, max_size=25))
def test_retries_re_publish_each_image_at_most_once_per_delivery_deadline(steps):
    """Any sequence of retries at any pace, images finishing meanwhile: between two re-publishes of an image at
    least the delivery deadline passes; every refusal says a wait that ends exactly when the next is allowed."""
    app = fake_app()
    job_id = _job_with_lost_messages(app, photos=4)
    clock = FakeClock()
    retry = RetryJob(app.jobs, app.resume_job, clock=clock)
    published_at: dict[str, list[datetime]] = {}
    last: datetime | None = None
    for advance, finish_one in steps:
        clock.now += timedelta(seconds=advance)
        if finish_one and app.publisher.messages:  # one image finishes: it is not re-published again
            app.classify_image(app.publisher.messages.pop(0))
        sent = len(app.publisher.messages)
        try:
            view = retry(job_id)
        except Overloaded as exc:
            assert last is not None and clock.now - last < timedelta(seconds=DELIVERY_DEADLINE_SECONDS)
            allowed = last + timedelta(seconds=DELIVERY_DEADLINE_SECONDS)
            assert exc.retry_after == max(1, math.ceil((allowed - clock.now).total_seconds()))
            assert len(app.publisher.messages) == sent
            continue
        assert last is None or clock.now - last >= timedelta(seconds=DELIVERY_DEADLINE_SECONDS)
        last = clock.now
        for message in app.publisher.messages[sent:]:
            published_at.setdefault(message.name, []).append(clock.now)
        assert view.extra["republished"] == len(app.publisher.messages) - sent
    for times in published_at.values():
        assert all(b - a >= timedelta(seconds=DELIVERY_DEADLINE_SECONDS) for a, b in zip(times, times[1:]))


# --- 3. Example folders count photos, not files -------------------------------------------------------------------
def test_twenty_thousand_non_photos_before_four_photos_still_give_four_usable_examples():
    app = fake_app()
    for n in range(20_000):
        app.objects.write("images", f"examples/glorp/a{n:05}.txt", b"notes")
    for n in range(4):
        app.objects.write("images", f"examples/glorp/z{n}.jpg", solid_jpeg("red"))
    for colour in ("red", "green", "blue"):
        app.objects.write("images", f"all/{colour}.jpg", solid_jpeg(colour))
    read: list[str] = []
    reader = app.objects.read
    app.objects.read = lambda bucket, name: read.append(name) or reader(bucket, name)  # type: ignore[method-assign]
    client = served(app)
    created = client.post("/classification-job", json={"classes": ["glorp"], "examples": {"glorp": "examples/glorp/"}})
    assert created.status_code == 201 and created.get_json()["example_photos"] == {"glorp": 4}
    for message in list(app.publisher.messages):
        app.classify_image(message)
    status = client.get(f"/classification-job/{created.get_json()['id']}").get_json()
    assert status["complete"] and status["failed"] == 0 and status["matches"] == {"glorp": 1}
    assert not [name for name in read if name.endswith(".txt")]  # no text file read, not even once


def test_an_example_folder_is_read_for_at_most_its_cap_of_photos(monkeypatch):
    from common.usecases import create_job as create_job_module

    app = fake_app()
    for n in range(30):
        app.objects.write("images", f"examples/glorp/{n:02}.JPG", solid_jpeg("red"))
    monkeypatch.setattr(create_job_module, "MAX_EXAMPLE_READS", 7)
    assert len(example_photos(app.objects, "images", "examples/glorp/")) == 7
    assert not is_photo_name("examples/glorp/notes.txt") and not is_photo_name("examples/glorp/.jpg")
    assert is_photo_name("examples/glorp/IMG_1.HEIC") and is_photo_name("x.tiff")


# --- 4. Dead letters count only what the job published --------------------------------------------------------
def _dead_letters(app):
    return app.dead_letter  # as production builds it: announcing the job its last image completes


def test_forged_dead_letters_naming_what_the_job_never_published_count_nothing():
    app = fake_app()
    for n in range(3):
        app.objects.write("images", f"all/{n}.jpg", solid_jpeg("red"))
    app.objects.write("images", "other/0.jpg", solid_jpeg("red"))
    job = app.create_job({"classes": ["tabby"]})
    genuine = app.publisher.messages[0]
    record = _dead_letters(app)
    for name in ("all/never.jpg", "all/../other/0.jpg", "other/0.jpg", "all/0.jpg/", "all//0.jpg"):
        assert record.image(dataclasses.replace(genuine, name=name), 10) is None
    assert record.image(dataclasses.replace(genuine, job_id="d" * 32), 10) is None
    assert app.jobs.done_count(job.id) == 0
    assert record.image(genuine, 10) is not None and record.image(genuine, 10) is None  # once
    assert [r.reason for r in app.jobs.results(job.id)] == ["gave up after 10 deliveries"]
    assert record.object_event("images", "all/not-there.jpg", 10) == []


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=st.lists(st.tuples(
    st.sampled_from(["job", "other-job", "unknown-job", "classify"]),
    st.one_of(st.sampled_from(["all/0.jpg", "all/1.jpg", "all/2.jpg", "other/0.jpg", "all/./0.jpg",
                               "all/../other/0.jpg", "all/", "all/never.jpg"]),
              st.text(alphabet="al/.0123x_", min_size=0, max_size=14)),
    st.integers(1, 20)), max_size=40))
def test_dead_letters_never_count_past_the_total_nor_a_name_the_job_did_not_publish(steps):
    """Forged dead letters (random names, other prefixes, other and unknown jobs, duplicates) mixed with genuine
    deliveries: each job counts only names it published, each once, never more than its number_of_files."""
    app = fake_app()
    for n in range(3):
        app.objects.write("images", f"all/{n}.jpg", solid_jpeg("red"))
    app.objects.write("images", "other/0.jpg", solid_jpeg("red"))
    job = app.create_job({"classes": ["tabby"]})
    other = app.create_job({"classes": ["tabby"], "source_prefix": "other/"})
    messages = {(m.job_id, m.name): m for m in app.publisher.messages}
    ids = {"job": job.id, "other-job": other.id, "unknown-job": "e" * 32}
    record = _dead_letters(app)
    for which, name, deliveries in steps:
        if which == "classify":  # a genuine delivery of one of the job's images, whenever it comes
            if (job.id, name) in messages:
                app.classify_image(messages[(job.id, name)])
            continue
        record.image(dataclasses.replace(app.publisher.messages[0], job_id=ids[which], name=name), deliveries)
    for created in (job, other):
        counted = [r.name for r in app.jobs.results(created.id)]
        assert {(created.id, name) for name in counted} <= set(messages) and len(counted) == len(set(counted))
        assert app.jobs.done_count(created.id) <= app.jobs.get_job(created.id).number_of_files
    assert app.jobs.results("e" * 32) is not None and list(app.jobs.results("e" * 32)) == []


def test_an_object_added_after_the_listing_is_counted_only_while_the_job_has_room():
    """The known limit: without a manifest of what was published, an object uploaded under the prefix after the
    listing looks like one of the job's images; the job's total still bounds what its dead letters count."""
    app = fake_app()
    app.objects.write("images", "all/0.jpg", solid_jpeg("red"))
    job = app.create_job({"classes": ["tabby"]})
    [genuine] = app.publisher.messages
    app.objects.write("images", "all/late.jpg", solid_jpeg("red"))
    app.classify_image(genuine)
    assert _dead_letters(app).image(dataclasses.replace(genuine, name="all/late.jpg"), 10) is None  # job full
    assert app.jobs.done_count(job.id) == 1 == app.jobs.get_job(job.id).number_of_files
