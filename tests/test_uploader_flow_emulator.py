"""Uploaders on the emulators (issue 32 replaces issue 12's imagined downloader-uploader).

The real contract: `imgclassify emulate --mount FOLDER --uploader DIR` mounts the bucket (rclone + FUSE) and starts
the stand-in downloader-uploader (tests/standins, written from the old service's contract, laid out as its source
folder) working in it; the old client's flow — download into the mount's all/, classify through the gateway, upload
the mount's class folders — ends with the sorted photos under Dropbox `/<class>/`; the key comes from ./.env for
both; then a file written into the mount's all/ while a watch job is open joins that job and its copy shows in the
mount. OLD_SYSTEM_PHOTOS=300 measures a 300-photo round
trip (printed with -s; bench/old_system_roundtrip.py measures it with the mount's own costs).

An uploader that writes to the bucket itself (gsutil, rsync, a phone backup — the official storage client here) with
a watch job: 30 real photos in three bursts — before the job, during its listing, after — then close, and check:
every photo counted once, copies in the right prefixes, one event on the job-events topic, one signed callback.
fake-gcs-server publishes each object write to the Pub/Sub emulator as Cloud Storage notifications would."""
from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from imgclassify.emulation import free_port, wait_for_http
from tests.conftest import MOBILENET_TFLITE
from tests.standins.old_client import OldClient

pytestmark = [pytest.mark.emulator, pytest.mark.slow]
IMGCLASSIFY = str(Path(sys.executable).with_name("imgclassify"))
KEY, TOKEN = "old-system-key", "dropbox-token"
UPLOADER_KEY = "uploader-shared-key"
STANDIN_DIR = Path(__file__).parent / "standins" / "downloader_uploader_app"


def photos(shared: Path, count: int) -> list[Path]:
    if count <= 7:
        return [shared / "photos/coral" / n for n in ("cat.bmp", "cat_720p.jpg", "imprinting_dog_test_0.bmp",
                                                      "parrot.jpg", "hot_dog.jpg", "grace_hopper.bmp")][:count - 1] \
            + [shared / "photos/skimage/chelsea.png"]
    return sorted((shared / "photos/imagenet-dev").iterdir())[:count]


@pytest.mark.skipif(shutil.which("rclone") is None or not Path("/dev/fuse").exists(),
                    reason="needs rclone and FUSE (apt-get install rclone fuse3)")
def test_the_old_client_flow_with_emulate_starting_the_downloader_uploader_on_the_mounted_bucket(tmp_path, shared):
    """`emulate --mount FOLDER --uploader DIR`: the stand-in downloader-uploader's source folder started by emulate as
    the operator's app would be, working in the mounted bucket with the key from ./.env; the old client's three steps
    put the sorted photos in the stand-in Dropbox per class; Ctrl-C stops it and unmounts."""
    count = int(os.environ.get("OLD_SYSTEM_PHOTOS", "7"))
    dropbox, mount = tmp_path / "dropbox", tmp_path / "bucket"
    (dropbox / "all").mkdir(parents=True)
    for path in photos(shared, count):
        shutil.copy(path, dropbox / "all" / path.name)
    (tmp_path / ".env").write_text(f"SERVICE_KEY={KEY}\n")
    port, uploader_port = free_port(), free_port()
    env = {**{k: v for k, v in os.environ.items() if k not in ("SERVICE_KEY", "DEFAULT_MATCH")},
           "STANDIN_DROPBOX": str(dropbox), "STANDIN_DROPBOX_TOKEN": TOKEN}
    emulate = subprocess.Popen([IMGCLASSIFY, "emulate", "--port", str(port), "--mount", str(mount), "--uploader",
                                str(STANDIN_DIR), "--uploader-port", str(uploader_port), "--model", "mobilenet_v2",
                                "--weights", str(MOBILENET_TFLITE)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    uploader_url = f"http://127.0.0.1:{uploader_port}"
    try:
        wait_for_http(f"http://127.0.0.1:{port}/classification-job/{'0' * 32}", 300, emulate)
        wait_for_http(f"{uploader_url}/download-job/0", 120, emulate)  # started once the bucket is mounted
        denied = requests.post(f"http://127.0.0.1:{port}/classification-job", json={"classes": ["cat"]}, timeout=30)
        assert denied.status_code == 401, denied.text  # the key from ./.env is enforced by the gateway
        assert requests.get(f"{uploader_url}/download-job/0", timeout=10).status_code == 401  # and by the uploader
        client = OldClient(f"http://127.0.0.1:{port}", uploader_url, KEY, TOKEN, timeout=900)
        classes = ["cat", "Cat", "dog"] if count <= 7 else ["dog", "cat", "bird", "car"]
        timings = {}
        for kind in ("download", "classification", "upload"):
            started = time.monotonic()
            job = client.step(kind, classes)
            timings[kind] = time.monotonic() - started
            assert job["complete"], job
        started = time.monotonic()
        sent = uploaded_when_done(dropbox, mount, classes)  # the client polls only the last upload job
        timings["upload"] += time.monotonic() - started
        status = client._status("classification", job_id(client))
        assert status["processed"] + status["failed"] == count == status["number_of_files"], status
        for name in classes:
            assert all((dropbox / name / n).read_bytes() == (dropbox / "all" / n).read_bytes() for n in sent[name])
        assert sum(len(names) for names in sent.values()) == sum(status["matches"].values()) > 0
        if count <= 7:
            assert sent["cat"] == sent["Cat"] and {"chelsea.png", "cat.bmp"} <= sent["cat"], sent
            assert "imprinting_dog_test_0.bmp" in sent["dog"], sent
        print(f"\n{count} photos: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()) +
              f"; matches {status['matches']}")
        watched_through_the_mount(port, mount, shared)
    finally:
        emulate.send_signal(signal.SIGINT)
        _, err = emulate.communicate(timeout=120)
    assert not os.path.ismount(mount), "emulate left the bucket mounted"
    assert f"requests need the key (SERVICE_KEY from {(tmp_path / '.env').resolve()})" in err, err[-2000:]
    started_line = re.search(rf"downloader-uploader \(POST /download-job, POST /upload-job; the bucket is its "
                             rf"folder\): {uploader_url} .* pid (\d+),", err)
    assert started_line, err[-2000:]
    assert KEY not in err  # the key is passed, never printed
    with pytest.raises(ProcessLookupError):
        os.kill(int(started_line.group(1)), 0)  # stopped with emulate


def uploaded_when_done(dropbox: Path, mount: Path, classes: list[str]) -> dict[str, set[str]]:
    """Each class folder's files as they reach the stand-in Dropbox, once every class's folder in the mount is
    there in full; an empty set for a class with no folder (no photo of it)."""
    deadline = time.monotonic() + 120

    def names(folder: Path) -> set[str]:
        return {p.name for p in folder.iterdir()} if folder.is_dir() else set()

    while (sent := {c: names(dropbox / c) for c in classes}) != {c: names(mount / c) for c in classes}:
        assert time.monotonic() < deadline, sent
        time.sleep(0.2)
    return sent


def watched_through_the_mount(port: int, mount: Path, shared: Path) -> None:
    """A file a downloader-uploader writes into the mounted all/ while a watch job is open joins that job (the
    emulated bucket's notification, as a real bucket's), and its copy shows in the mount's class folder."""
    base, headers = f"http://127.0.0.1:{port}", {"Authorization": KEY}
    job = requests.post(f"{base}/classification-job", headers=headers, timeout=60,
                        json={"classes": ["cat"], "watch": True}).json()
    assert job["state"] == "watching", job
    listed = job["number_of_files"]
    shutil.copyfile(shared / "photos/skimage/chelsea.png", mount / "all" / "written-through-the-mount.png")
    deadline = time.monotonic() + 120
    while (status := requests.get(f"{base}/classification-job/{job['id']}", headers=headers,
                                  timeout=10).json())["processed"] + status["failed"] < listed + 1:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["number_of_files"] == listed + 1 and status["failed"] == 0, status
    deadline = time.monotonic() + 10  # the mount lists a folder again after its 1 s directory cache
    while not (mount / "cat" / "written-through-the-mount.png").is_file():  # a tabby: the old flow's cat too
        assert time.monotonic() < deadline, "the copy never showed in the mount"
        time.sleep(0.2)
    closed = requests.post(f"{base}/classification-job/{job['id']}/close", headers=headers, json={}, timeout=60)
    assert closed.json()["state"] == "complete", closed.text


def job_id(client: OldClient) -> str:
    """The classification job the old client ran (the last line it printed about one)."""
    line = next(p for p in reversed(client.printed) if p.startswith("classification job "))
    return line.split()[2]

class Receiver(http.server.ThreadingHTTPServer):
    """A local callback receiver that records every POST."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.posts.append((dict(self.headers), body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def stack(emulators, shared):
    from imgclassify.local_stack import LocalStack

    local = LocalStack(emulators, bucket="uploads", topic="classify-uploads", subscription="uploads-push",
                       job_events_topic="job-events-uploads",
                       function_env={"MODEL": "mobilenet_v2", "MODEL_WEIGHTS": str(MOBILENET_TFLITE),
                                     "SERVICE_KEY": UPLOADER_KEY, "THREADS": "8"})
    local.start()
    yield local
    local.stop()


def test_a_bucket_writing_uploaders_photos_are_each_sorted_once_and_completion_announced(stack, shared):
    from google.cloud import pubsub_v1, storage

    from common.adapters.gcp import storage_client
    from common.usecases.announce_completion import SIGNATURE_HEADER

    photos = sorted((shared / "photos/imagenet-dev").iterdir())[:30]
    bucket = storage_client(stack.emulators.project).bucket(stack.bucket)
    assert isinstance(bucket, storage.Bucket)
    subscriber = pubsub_v1.SubscriberClient()
    events = subscriber.subscription_path(stack.emulators.project, "job-events-uploader")
    subscriber.create_subscription(name=events, topic=f"projects/{stack.emulators.project}/topics/"
                                                     f"{stack.job_events_topic}")
    receiver = Receiver()
    headers = {"Authorization": UPLOADER_KEY}
    uploaded_at: dict[str, float] = {}

    def upload(batch) -> None:
        for path in batch:
            bucket.blob(f"all/{path.name}").upload_from_filename(str(path))
            uploaded_at[f"all/{path.name}"] = time.monotonic()

    upload(photos[:10])  # before the job
    during = threading.Thread(target=upload, args=(photos[10:20],))
    during.start()  # while create_job lists
    job = requests.post(f"{stack.gateway_url}/classification-job", headers=headers, timeout=60, json={
        "classes": ["dog", "bird", "fish"], "watch": True,
        "callback_url": f"http://127.0.0.1:{receiver.server_address[1]}/done"}).json()
    during.join()
    assert job["state"] == "watching"
    upload(photos[20:])  # after

    deadline = time.monotonic() + 180
    while (status := requests.get(job["status_url"], headers=headers, timeout=10).json())["number_of_files"] < 30 \
            or status["processed"] + status["failed"] < 30:
        assert time.monotonic() < deadline, status
        time.sleep(0.2)
    assert status["state"] == "watching" and not receiver.posts
    closed = requests.post(f"{stack.gateway_url}/classification-job/{job['id']}/close", headers=headers, json={},
                           timeout=60).json()
    assert closed["state"] == "complete"

    final = requests.get(job["status_url"], headers=headers, timeout=10).json()
    assert (final["number_of_files"], final["processed"], final["failed"]) == (30, 30, 0)
    copies = {blob.name for c in ("dog", "bird", "fish") for blob in bucket.list_blobs(prefix=f"{c}/")}
    assert len(copies) == sum(final["matches"].values()) > 0
    assert all(bucket.blob(c).download_as_bytes() == bucket.blob("all/" + c.split("/", 1)[1]).download_as_bytes()
               for c in copies)
    received = []
    for _ in range(5):
        response = subscriber.pull(subscription=events, max_messages=10, timeout=5)
        received += [json.loads(m.message.data) for m in response.received_messages]
        if response.received_messages:
            subscriber.acknowledge(subscription=events, ack_ids=[m.ack_id for m in response.received_messages])
    assert [(e["job_id"], e["state"], e["number_of_files"]) for e in received] == [(job["id"], "complete", 30)]
    deadline = time.monotonic() + 60  # the callback is sent in the background once the job completes
    while (sent := requests.get(job["status_url"], headers=headers, timeout=10).json()).get(
            "callback", {}).get("status") in (None, "pending"):
        assert time.monotonic() < deadline, sent
        time.sleep(0.2)
    assert sent["callback"]["status"] == "delivered", sent["callback"]
    [(callback_headers, body)] = receiver.posts
    expected = "sha256=" + hmac.new(UPLOADER_KEY.encode(), body, hashlib.sha256).hexdigest()
    assert callback_headers[SIGNATURE_HEADER] == expected and json.loads(body)["complete"] is True
    receiver.shutdown()
    subscriber.close()
