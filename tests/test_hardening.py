"""Issue 17, on real files and real sockets with a fake model: a class of attack per test, each with variants.
The same attacks against the processes users run (`imgclassify run/undo/report/serve`) are in
tests/test_hardening_cli.py."""
from __future__ import annotations

import csv
import errno
import io
import os
import socket
import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np
import pytest
from PIL import Image

from common.adapters.background import BoundedWorkers
from common.adapters.http_callbacks import HttpCallbackSender
from common.adapters.local import FolderInUse, FolderLock, FolderObjectStore
from common.domain.callbacks import CallbackPolicy
from common.domain.errors import CallbackRefused, Conflict, InvalidRequest, NotFound, PermanentImageError, \
    TransientError, TruncatedImage
from common.domain.jobs import JobDefaults, JobRecord, JobSpec
from common.domain.requests import parse_job_request
from common.domain.results import Counters, ImageResult
from common.domain.status import status_view
from common.inference.decoding import MAX_DECODED_BYTES, decode_image
from common.ports import Removal
from common.pages import export_csv
from common.usecases.deliver_callback import DeliverCallback
from common.usecases.job_status import JobStatus
from common.usecases.report_job import ReportJob
from tests.fakes import solid_jpeg
from tests.test_real_folders import RED_CAT, Folder, put, snapshot


# --- 1. Data loss: nothing removed or written through a link, at any component --------------------------------
def _sorted_folder(tmp_path):
    folder = Folder(tmp_path)
    put(tmp_path / "all/cat.jpg")
    put(tmp_path / "all/pets/deep/cat.jpg")
    view = folder.run(["cat"])
    assert view.counters.processed == 2 and (tmp_path / "cat/pets/deep/cat.jpg").is_file()
    return folder, view.id


def _link_to_all(root, outside):
    (root / "cat").rename(root / "cat.moved")
    (root / "cat").symlink_to(root / "all")


def _link_component_to_all(root, outside):
    (root / "cat/pets").rename(root / "pets.moved")
    (root / "cat/pets").symlink_to(root / "all/pets")


def _link_to_outside(root, outside):
    (root / "cat").rename(root / "cat.moved")
    (outside / "pets/deep").mkdir(parents=True)
    for name in ("cat.jpg", "pets/deep/cat.jpg"):
        (outside / name).write_bytes(RED_CAT)
    (root / "cat").symlink_to(outside)


def _relative_link_deep(root, outside):
    (root / "cat/pets/deep").rename(root / "deep.moved")
    (root / "cat/pets/deep").symlink_to("../../all/pets/deep")


@pytest.mark.parametrize("relink", [_link_to_all, _link_component_to_all, _link_to_outside, _relative_link_deep])
def test_undo_never_removes_through_a_link_at_any_component(tmp_path, relink):
    root, outside = tmp_path / "dir", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    folder, job_id = _sorted_folder(root)
    relink(root, outside)
    before, before_outside = snapshot(root / "all"), snapshot(outside)

    report = folder.app.undo_job(job_id)

    assert snapshot(root / "all") == before and snapshot(outside) == before_outside
    assert report["removed"] + report["missing"] + len(report["kept"]) == 2
    assert report["removed"] <= 1  # at most the copy whose path has no link


def test_a_copy_is_never_written_through_a_link_at_a_deeper_component(tmp_path):
    root, outside = tmp_path / "dir", tmp_path / "outside"
    put(root / "all/pets/deep/cat.jpg")
    (root / "cat/pets").mkdir(parents=True)
    outside.mkdir()
    (root / "cat/pets/deep").symlink_to(outside)
    view = Folder(root).run(["cat"])
    assert (view.counters.failed, list(outside.iterdir())) == (1, [])


def test_remove_reports_why_it_kept_a_file(tmp_path):
    store = FolderObjectStore(tmp_path)
    put(tmp_path / "all/a.jpg")
    (tmp_path / "cls").symlink_to(tmp_path / "all")
    from common.domain.predictions import content_fingerprint

    assert store.remove("local", "cls/a.jpg", content_fingerprint(RED_CAT)) == Removal.UNSAFE
    assert store.remove("local", "nothing/a.jpg", "md5:x") == Removal.MISSING
    assert (tmp_path / "all/a.jpg").read_bytes() == RED_CAT


# --- 2. Exposure: previews only of the job's own results; CSV formulas neutralised -----------------------------
@pytest.mark.parametrize("name", ["all/../private/secret.jpg", "all/./../private/secret.jpg", "all//../secret.jpg",
                                  "all/pets/../../private/secret.jpg", "private/secret.jpg", "all/secret.jpg",
                                  "all/cat.jpg/..", "all/cat.jpg\x00.png", "/etc/passwd", "all/\\..\\secret.jpg"])
def test_a_preview_is_only_of_a_photo_the_job_has_a_result_for(tmp_path, name):
    folder = Folder(tmp_path)
    put(tmp_path / "all/cat.jpg")
    put(tmp_path / "private/secret.jpg")
    job_id = folder.run(["cat"]).id
    report = ReportJob(folder.jobs, folder.objects, lambda data, box=None, full=False: data,  # the photo itself
                       JobStatus(folder.jobs, detector=False))
    assert report.thumbnail(job_id, "all/cat.jpg") == RED_CAT
    with pytest.raises(NotFound) as refused:
        report.thumbnail(job_id, name)
    assert refused.value.field == "name"


def test_the_full_photo_a_page_links_is_always_encoded_again_never_the_files_own_bytes():
    from common.inference.thumbnails import FULL_SIZE, make_full_photo

    photo = io.BytesIO()
    Image.new("RGB", (3000, 1000), "red").save(photo, format="JPEG")
    full = make_full_photo(photo.getvalue())
    assert full is not None and full != photo.getvalue() and full.startswith(b"\xff\xd8")
    assert Image.open(io.BytesIO(full)).size == (FULL_SIZE, round(FULL_SIZE / 3))
    with pytest.raises(InvalidRequest) as refused:  # a page in disguise: nothing served, a 400 saying why
        make_full_photo(b"<html><script>alert(1)</script></html>")
    assert refused.value.field == "size" and "not a recognised image format" in refused.value.message


def test_the_folder_store_never_reads_a_name_that_climbs(tmp_path):
    store = FolderObjectStore(tmp_path / "dir", sources={"all/": tmp_path / "dir/all"})
    put(tmp_path / "dir/all/a.jpg")
    put(tmp_path / "dir/private/secret.jpg")
    for name in ("all/../private/secret.jpg", "all/./a.jpg", "all//a.jpg", "all/../../x"):
        with pytest.raises(Exception) as refused:
            store.read("local", name)
        assert type(refused.value).__name__ == "ObjectMissing"


@pytest.mark.parametrize("dangerous", ['=HYPERLINK("http://evil/","x")', "+cmd|' /C calc'!A0", "-2+3", "@SUM(1)",
                                       "\tx", "\rx"])
def test_csv_cells_a_spreadsheet_would_run_are_neutralised(dangerous):
    view = status_view(JobRecord("a" * 32, JobSpec(("cat",), "local"), 1, "2026-01-01T00:00:00"), Counters())
    result = ImageResult(f"all/{dangerous}", ok=False, reason=dangerous)
    [row] = list(csv.DictReader(io.StringIO(export_csv(view, [result]))))
    assert row["file"] == "'" + dangerous and row["reason"] == "'" + dangerous


# --- 3. SSRF: callbacks -----------------------------------------------------------------------------------------
ALWAYS_REFUSED = ["http://169.254.169.254/computeMetadata/v1/", "http://metadata.google.internal/",
                  "http://METADATA.google.internal./x", "http://metadata/", "http://[::ffff:169.254.169.254]/",
                  "http://[::ffff:a9fe:a9fe]/", "http://2852039166/", "http://0xa9fea9fe/",
                  "http://0251.0376.0251.0376/", "http://169.254.43518/", "http://[fe80::1%25eth0]/",
                  "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::1]/", "http://[fd00:ec2::254]/",
                  "http://0.0.0.0:8080/", "http://[::]/", "http://224.0.0.1/", "ftp://example.com/",
                  "http://user:pw@example.com/", "http://example.com:99999/"]
PRIVATE = ["http://10.0.0.8/hook", "http://192.168.1.2/", "http://172.16.0.1/", "http://100.64.0.1/",
           "http://[fd12::1]/", "http://[::ffff:10.0.0.1]/"]
LOOPBACK = ["http://127.0.0.1:9/", "http://127.1/", "http://localhost/", "http://api.localhost/", "http://[::1]/",
            "http://2130706433/", "http://[::ffff:127.0.0.1]/"]


def _refused(url: str, policy: CallbackPolicy) -> bool:
    try:
        parse_job_request({"classes": ["dog"], "callback_url": url}, JobDefaults("images", callbacks=policy))
    except InvalidRequest as exc:
        assert exc.field == "callback_url"
        return True
    return False


@pytest.mark.parametrize("url", ALWAYS_REFUSED)
def test_metadata_link_local_and_odd_forms_are_refused_whatever_the_policy(url):
    assert _refused(url, CallbackPolicy(allow_loopback=True, allow_private=True))


@pytest.mark.parametrize("url", PRIVATE + LOOPBACK)
def test_private_and_loopback_need_the_operator_or_the_embedded_server(url):
    assert _refused(url, CallbackPolicy())
    assert _refused(url, CallbackPolicy(allow_loopback=True)) == (url in PRIVATE)
    assert not _refused(url, CallbackPolicy(allow_private=True))


def test_a_public_callback_is_accepted():
    assert not _refused("https://hooks.example.com/done?x=1", CallbackPolicy())


def test_a_name_resolving_to_a_forbidden_address_is_refused_before_connecting(monkeypatch):
    connected = []
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, port, **_: [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", port)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("169.254.169.254", port))])
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: connected.append(a))
    with pytest.raises(CallbackRefused):
        HttpCallbackSender(CallbackPolicy()).post("http://rebind.example/", b"{}", {}, 1.0)
    assert connected == []


class _Receiver:
    """A loopback HTTP server answering every POST with `status` (and a Location), counting hits."""

    def __init__(self, status: int, location: str = "") -> None:
        hits = self.hits = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                hits.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(status)
                if location:
                    self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Jobs:
    def __init__(self) -> None:
        self.outcomes = []

    def record_callback(self, job_id, outcome) -> None:
        self.outcomes.append(outcome)


@pytest.mark.parametrize("target", ["internal", "ftp://127.0.0.1/x", "http://169.254.169.254/"])
def test_a_redirect_is_never_followed(target):
    internal = _Receiver(200)
    redirecting = _Receiver(302, internal.url if target == "internal" else target)
    try:
        jobs = _Jobs()
        deliver = DeliverCallback(jobs, HttpCallbackSender(CallbackPolicy(allow_loopback=True)), "k",
                                  sleep=lambda _: None)
        outcome = deliver("j", redirecting.url, {"complete": True})
        assert (outcome["status"], outcome["attempts"], outcome["http_status"]) == ("failed", 1, 302)
        assert len(redirecting.hits) == 1 and internal.hits == []
    finally:
        internal.close()
        redirecting.close()


def _silent_server() -> tuple[socket.socket, int]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    return listener, listener.getsockname()[1]


def test_an_unreachable_receiver_is_said_without_socket_detail():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: refused
    silent, silent_port = _silent_server()
    try:
        sender = HttpCallbackSender(CallbackPolicy(allow_loopback=True))
        deliver = DeliverCallback(_Jobs(), sender, "", attempts=2, timeout=0.3, sleep=lambda _: None)
        refused = deliver("j", f"http://127.0.0.1:{port}/", {})
        unanswered = deliver("j", f"http://127.0.0.1:{silent_port}/", {})
        assert refused == unanswered == {"status": "failed", "attempts": 2, "error": "unreachable"}
    finally:
        silent.close()


# --- 4. Stalls: classification never waits for a callback -------------------------------------------------------
def test_classification_and_requests_never_wait_for_a_silent_receiver(tmp_path):
    silent, port = _silent_server()
    try:
        # One background worker and one place in its queue, as bootstrap would wire them with those sizes.
        folder = Folder(tmp_path, settings={"callback_allow_loopback": True},
                        background=BoundedWorkers(workers=1, max_pending=1))
        for n in range(6):
            put(tmp_path / f"all/{n}.jpg")
        first = folder.run(["cat"], callback_url=f"http://127.0.0.1:{port}/hook")
        # The job is complete and answered while its callback waits on the receiver (30 s) in the background.
        assert (first.complete, first.counters.processed, first.job.callback["status"]) == (True, 6, "pending")
        # A second and a third job: the one worker is held by a receiver and the queue (1 place) fills: the
        # callback past it is refused at once, and says so.
        second = folder.create({"classes": ["cat"], "source_prefix": "none/",
                                "callback_url": f"http://127.0.0.1:{port}/2"})
        third = folder.create({"classes": ["cat"], "source_prefix": "nothing/",
                               "callback_url": f"http://127.0.0.1:{port}/3"})
        assert second.complete and third.complete
        outcomes = [folder.status(job.id).job.callback for job in (second, third)]
        assert outcomes[1]["status"] == "failed" and "too many callbacks" in outcomes[1]["error"]
    finally:
        silent.close()


# --- 5. Memory: every pixel format decoded within the budget, or refused saying why -----------------------------
def _png_header(width: int, height: int, bit_depth: int, colour_type: int) -> bytes:
    """A PNG whose header declares a size, with a few real bytes of image data (enough to pass the bomb check)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    body = os.urandom(width * height // 900)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


@pytest.mark.parametrize("width, height, depth, colour", [
    (9500, 9500, 16, 0),  # 16-bit grey: 180 MB
    (7000, 7000, 8, 2),  # RGB: 196 MB
    (5000, 5000, 8, 6),  # RGBA: 2 x 100 MB (premultiplied to reduce)
    (5000, 5000, 16, 6),  # 16-bit RGBA
])
def test_an_image_over_the_decode_budget_is_refused_unread_with_the_reason(width, height, depth, colour):
    with pytest.raises(PermanentImageError, match="budget per image"):
        decode_image(_png_header(width, height, depth, colour))


def _encoded(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def test_16_bit_and_float_images_keep_their_range_after_reduction():
    ramp = np.tile(np.linspace(1000, 60000, 2400, dtype=np.float32), (1800, 1))
    for image in (Image.fromarray(ramp.astype(np.uint16)), Image.fromarray(ramp)):
        pixels = decode_image(_encoded(image, "TIFF"))[:, :, 0].astype(int)
        assert pixels[:, 0].max() < 20 and pixels[:, -1].min() > 235  # dark to bright, not clipped to white
        assert (np.diff(pixels.mean(axis=0)) >= -1).all()  # still a ramp


@pytest.mark.parametrize("mode", ["P", "CMYK", "RGBA", "LA", "1", "I;16", "F"])
def test_every_accepted_mode_decodes_reduced_to_the_same_picture(mode):
    base = Image.new("RGB", (1800, 1200), (200, 40, 40))
    base.paste((40, 40, 200), (900, 0, 1800, 1200))
    image = base.convert("L" if mode in ("I;16", "F", "1") else mode)
    if mode == "I;16":
        image = Image.fromarray((np.asarray(image, dtype=np.uint16) * 257))
    elif mode == "F":
        image = Image.fromarray(np.asarray(image, dtype=np.float32))
    pixels = decode_image(_encoded(image, "TIFF" if mode in ("I;16", "F", "CMYK") else "PNG")).astype(int)
    left, right = pixels[:, :100].mean(axis=(0, 1)), pixels[:, -100:].mean(axis=(0, 1))
    assert np.abs(left - right).sum() > 60  # the two halves are still told apart


def test_a_truncated_file_is_said_to_be_truncated():
    data = _encoded(Image.new("RGB", (640, 480), (1, 2, 3)), "PNG")
    with pytest.raises(TruncatedImage):
        decode_image(data[: len(data) // 2])


def test_the_budget_is_what_the_docs_promise():
    assert MAX_DECODED_BYTES == 160 * 2**20  # docs/reliability.md and bench/results/decode-memory.json


# --- 6. Jobs that cannot finish, or records that are wrong ------------------------------------------------------
def _remove_deep(top) -> None:
    """shutil.rmtree (pytest's cleanup too) recurses once per level: take the tree down from the bottom instead."""
    levels = [top]
    while (levels[-1] / "d").is_dir():
        levels.append(levels[-1] / "d")
    for folder in reversed(levels):
        for entry in folder.iterdir():
            if not entry.is_dir():
                entry.unlink()
        folder.rmdir()


def test_1200_nested_folders_list_without_recursion_and_the_deep_ones_fail_with_a_reason(tmp_path, request):
    request.addfinalizer(lambda: [_remove_deep(tmp_path / top) for top in ("all", "cat")
                                  if (tmp_path / top).exists()])
    deep = tmp_path / "all"
    deep.mkdir()
    for level in range(1200):
        deep = deep / "d"
        deep.mkdir()  # one level at a time: os.makedirs itself recurses
        if level in (3, 50):
            (deep / "cat.jpg").write_bytes(RED_CAT)
    (deep / "x.jpg").write_bytes(RED_CAT)
    view = Folder(tmp_path).run(["cat"])
    assert (view.complete, view.counters.processed, view.counters.failed) == (True, 2, 1)


def test_a_second_writer_on_a_folder_is_refused_naming_the_first(tmp_path):
    with FolderLock(tmp_path / ".imgclassify", "run"):
        with pytest.raises(FolderInUse) as refused:
            FolderLock(tmp_path / ".imgclassify", "watch").acquire()
        assert f"pid {os.getpid()}" in refused.value.message and isinstance(refused.value, Conflict)
    FolderLock(tmp_path / ".imgclassify", "watch").acquire().release()  # free once the first ends


def test_undo_of_an_open_watch_job_is_refused_then_allowed_once_closed(tmp_path):
    folder = Folder(tmp_path)
    put(tmp_path / "all/a.jpg")
    job = folder.create({"classes": ["cat"], "watch": True})
    assert folder.queue.join(timeout=30)
    with pytest.raises(Conflict) as refused:
        folder.app.undo_job(job.id)
    assert refused.value.details["state"] == "watching"
    folder.app.close_job(job.id)
    assert folder.app.undo_job(job.id)["removed"] == 1


def test_a_file_still_being_written_is_retried_and_classified_once_whole(tmp_path):
    folder = Folder(tmp_path)
    arrived = folder.app.object_arrived
    job = folder.create({"classes": ["cat"], "watch": True})
    whole = solid_jpeg("red", (640, 480))
    put(tmp_path / "all/upload.jpg", whole[: len(whole) // 3])  # an upload paused a third of the way
    arrived("local", "all/upload.jpg")
    assert folder.queue.join(timeout=30)
    failed = folder.jobs.result(job.id, "all/upload.jpg")
    assert (failed.ok, failed.retryable) == (False, True)

    put(tmp_path / "all/upload.jpg", whole)  # the upload finishes: the watcher sees it again
    assert arrived("local", "all/upload.jpg") == [job.id]
    assert folder.queue.join(timeout=30)
    view = folder.status(job.id)
    assert (view.counters.processed, view.counters.failed, view.number_of_files) == (1, 0, 1)


def test_a_disk_full_failure_is_retried_by_the_next_run(tmp_path, monkeypatch):
    folder = Folder(tmp_path)
    for n in range(3):
        put(tmp_path / f"all/{n}.jpg")
    real_copy = FolderObjectStore.copy

    def disk_full(self, bucket, source, target, content=None):
        if source.endswith("1.jpg"):
            raise TransientError(f"cannot copy to {target}: {os.strerror(errno.ENOSPC)}")
        return real_copy(self, bucket, source, target, content)

    monkeypatch.setattr(FolderObjectStore, "copy", disk_full)
    first = folder.run(["cat"])
    assert (first.counters.processed, first.counters.failed) == (2, 1)
    monkeypatch.setattr(FolderObjectStore, "copy", real_copy)  # space freed

    assert folder.resume(first.id) == (2, 1)
    assert folder.queue.join(timeout=30)
    view = folder.status(first.id)
    assert (view.complete, view.counters.processed, view.counters.failed, view.number_of_files) == (True, 3, 0, 3)
    assert sorted(p.name for p in (tmp_path / "cat").iterdir()) == ["0.jpg", "1.jpg", "2.jpg"]
