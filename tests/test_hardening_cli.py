"""Issue 17 against the processes users run: `imgclassify run`, `undo`, `report` and `serve` on real photos with
the real MobileNetV2 LiteRT model, attacked as the issue describes (and in other spellings)."""
from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import requests

from common.adapters.local import FolderLock
from imgclassify.emulation import free_port, wait_for_http
from tests.conftest import MOBILENET_TFLITE
from tests.test_cli import IMGCLASSIFY, imgclassify
from tests.test_real_folders import snapshot

pytestmark = pytest.mark.slow
MODEL = ("--model", "mobilenet_v2", "--weights", str(MOBILENET_TFLITE))


def _run_cats(folder: Path) -> str:
    ran = imgclassify("run", str(folder), "--classes", "cats", *MODEL, "--json")
    assert ran.returncode == 0, ran.stderr
    view = json.loads(ran.stdout)
    assert view["matches"]["cats"] >= 2 and (folder / "cats/pets/cat.bmp").is_file()
    return view["id"]


def test_undo_through_links_placed_after_the_run_deletes_nothing_of_the_users(photo_folder, tmp_path):
    _run_cats(photo_folder)
    outside = tmp_path / "outside"
    (outside / "pets").mkdir(parents=True)
    for copy in (photo_folder / "cats").rglob("*"):
        if copy.is_file():
            target = outside / copy.relative_to(photo_folder / "cats")
            target.write_bytes(copy.read_bytes())
    (photo_folder / "cats/pets").rename(photo_folder / "pets-moved")
    (photo_folder / "cats/pets").symlink_to(photo_folder / "all/pets")  # a component deep in the path
    (photo_folder / "cats").rename(photo_folder / "cats-moved")
    (photo_folder / "cats").symlink_to(outside)  # and the class folder itself
    before, before_outside = snapshot(photo_folder / "all"), snapshot(outside)

    undone = imgclassify("undo", str(photo_folder), "--json")

    assert undone.returncode == 0, undone.stderr
    assert snapshot(photo_folder / "all") == before and snapshot(outside) == before_outside
    report = json.loads(undone.stdout)
    assert report["removed"] == 0 and len(report["kept"]) >= 2


def test_report_replaces_a_link_at_its_output_instead_of_writing_through_it(photo_folder, tmp_path):
    job_id = _run_cats(photo_folder)
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    out = photo_folder / f"report-{job_id[:8]}.html"
    out.symlink_to(victim)
    for fmt in ("html", "csv"):
        target = out if fmt == "html" else photo_folder / f"report-{job_id[:8]}.csv"
        if fmt == "csv":
            target.symlink_to(victim)
        made = imgclassify("report", str(photo_folder), "--format", fmt)
        assert made.returncode == 0, made.stderr
        assert victim.read_text() == "mine" and target.is_file() and not target.is_symlink()


def test_a_second_writer_on_the_folder_is_refused_with_the_first_ones_pid(photo_folder):
    with FolderLock(photo_folder / ".imgclassify", "watch"):
        second = imgclassify("run", str(photo_folder), "--classes", "cats", *MODEL)
        undo = imgclassify("undo", str(photo_folder))
    assert second.returncode == 2 and f"pid {os.getpid()}" in second.stderr
    assert undo.returncode == 2 and not (photo_folder / "cats").exists()


@pytest.fixture
def served(photo_folder):
    """`imgclassify serve` with a service key, over a folder with one finished job."""
    job_id = _run_cats(photo_folder)
    (photo_folder / "private").mkdir()
    (photo_folder / "private/secret.bmp").write_bytes((photo_folder / "all/pets/cat.bmp").read_bytes())
    port = free_port()
    server = subprocess.Popen([IMGCLASSIFY, "serve", str(photo_folder), "--port", str(port), *MODEL],
                              env={**os.environ, "SERVICE_KEY": "k3y"}, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/classification-job/{'0' * 32}", 120, server)
        yield base, job_id
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)


KEY = {"Authorization": "k3y"}
BROWSER = {"Authorization": "Basic " + base64.b64encode(b"anyone:k3y").decode()}


def test_every_served_page_needs_the_key_and_a_browser_can_give_it(served):
    base, job_id = served
    for path in ("/", f"/classification-job/{job_id}/report", f"/classification-job/{job_id}"):
        refused = requests.get(base + path, timeout=10)
        assert refused.status_code == 401 and refused.json()["field"] == "Authorization"
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
        assert requests.get(base + path, headers=BROWSER, timeout=10).status_code == 200
    assert job_id in requests.get(base + "/", headers=KEY, timeout=10).text


@pytest.mark.parametrize("name", ["all/../private/secret.bmp", "all%2F..%2Fprivate%2Fsecret.bmp",
                                  "all/%2e%2e/private/secret.bmp", "all/./../private/secret.bmp",
                                  "all%2F%2E%2E%2Fprivate%2Fsecret.bmp", "all//..//private/secret.bmp",
                                  "all/pets/../../private/secret.bmp", "private/secret.bmp",
                                  "all/pets/cat.bmp/../../../private/secret.bmp", "%2e%2e/private/secret.bmp"])
def test_a_preview_of_a_file_outside_the_jobs_photos_is_never_served(served, name):
    base, job_id = served
    url = f"{base}/classification-job/{job_id}/thumbnail"
    legit = requests.get(url, params={"name": "all/pets/cat.bmp"}, headers=KEY, timeout=10)
    assert legit.status_code == 200 and legit.headers["Content-Type"] == "image/jpeg"
    answer = requests.get(f"{url}?name={name}", headers=KEY, timeout=10)
    assert answer.status_code in (400, 404) and answer.headers["Content-Type"] == "application/json"
    quoted = requests.get(f"{url}?name={quote(name, safe='')}", headers=KEY, timeout=10)
    assert quoted.status_code in (400, 404) and quoted.headers["Content-Type"] == "application/json"


def test_serve_answers_while_more_slow_clients_than_its_connection_limit_are_held(served):
    base, job_id = served
    port = int(base.rsplit(":", 1)[1])
    held: list[socket.socket] = []
    stop = threading.Event()

    def trickle() -> None:  # one header line every 2 s on every held connection, as a slowloris does
        while not stop.wait(2.0):
            for sock in list(held):
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass

    feeder = threading.Thread(target=trickle, daemon=True)
    try:
        for _ in range(260):  # the limit is 200
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /classification-job/" + job_id.encode() + b" HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        feeder.start()
        for _ in range(5):
            status = requests.get(f"{base}/classification-job/{job_id}", headers=KEY, timeout=10)
            assert status.status_code == 200 and status.json()["complete"]
            time.sleep(1)
    finally:
        stop.set()
        for sock in held:
            sock.close()


def test_the_servers_own_errors_are_json(served):
    base, _ = served
    big = requests.post(f"{base}/classification-job", data=b"x" * (200 * 1024), headers=KEY, timeout=10)
    assert big.status_code == 413 and big.json()["code"] == 413
    headers = {**KEY, "X-Huge": "h" * (20 * 1024)}
    huge = requests.get(f"{base}/classification-job/{'0' * 32}", headers=headers, timeout=10)
    assert huge.status_code == 431 and huge.headers["Content-Type"] == "application/json"
    long_url = requests.get(f"{base}/classification-job/{'0' * 20000}", headers=KEY, timeout=10)
    assert long_url.status_code in (414, 431) and long_url.json()["code"] == long_url.status_code


def test_serve_logs_one_structured_line_per_request_without_queries_or_keys(served, photo_folder):
    base, job_id = served
    requests.get(f"{base}/classification-job/{job_id}/thumbnail", params={"name": "all/pets/cat.bmp"}, headers=KEY,
                 timeout=10)
    requests.get(f"{base}/classification-job/{job_id}", timeout=10)  # no key: 401
    deadline = time.monotonic() + 10
    while True:
        lines = [json.loads(line) for line in (photo_folder / ".imgclassify/log.jsonl").read_text().splitlines()]
        logged = [line for line in lines if line.get("message") == "request"]
        if len(logged) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(line["method"], line["status"]) for line in logged[-2:]] == [("GET", 200), ("GET", 401)]
    assert all("name=" not in line["path"] and "k3y" not in json.dumps(line) for line in logged)
