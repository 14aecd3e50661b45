"""`imgclassify` as users run it: a subprocess on a folder of real photos, with the real MobileNetV2 weights."""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from imgclassify.cli import main
from imgclassify.emulation import free_port, wait_for_http
from common.inference.decoding import decode_image
from common.domain.jobs import JobSpec
from common.domain.matching import match_classes
from common.inference.classifier import ModelConfig
from common.inference.loader import load_classifier
from tests.conftest import MOBILENET_H5, MOBILENET_TFLITE

pytestmark = pytest.mark.slow
IMGCLASSIFY = str(Path(sys.executable).with_name("imgclassify"))
CLASSES = ["dogs", "cats", "birds", "food", "people"]
JSON = {"Content-Type": "application/json"}  # what a client of a write sends (else 415)


def imgclassify(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IMGCLASSIFY, *args], capture_output=True, text=True, timeout=600, **kwargs)


def files_under(root: Path, folder: str) -> set[str]:
    return {p.relative_to(root / folder).as_posix() for p in (root / folder).rglob("*") if p.is_file()}


def test_run_sorts_real_photos_into_class_folders(photo_folder):
    # The classifier alone (the reference below is the classifier): the detector's part is tests/test_detector.py.
    result = imgclassify("run", str(photo_folder), "--classes", *CLASSES, "--model", "mobilenet_v2",
                         "--weights", str(MOBILENET_H5), "--runtime", "keras", "--json",
                         env={**os.environ, "DETECTOR_MODEL": "none"})

    assert result.returncode == 0, result.stderr
    view = json.loads(result.stdout)
    originals = files_under(photo_folder, "all")
    assert (view["complete"], view["number_of_files"], view["processed"], view["failed"]) == (True, 8, 8, 0)
    # The reference: the same model called directly on each photo.
    classifier = load_classifier(ModelConfig("mobilenet_v2", str(MOBILENET_H5)))
    spec = JobSpec(tuple(CLASSES), "local")
    expected = {name: match_classes(spec, classifier.predict(
        decode_image((photo_folder / "all" / name).read_bytes())[None])[0]).matched for name in originals}
    for class_name in CLASSES:
        want = {name for name, matched in expected.items() if class_name in matched}
        assert (files_under(photo_folder, class_name) if (photo_folder / class_name).exists() else set()) == want
        assert view["matches"][class_name] == len(want)
    assert view["unmatched"] == sum(not m for m in expected.values())
    # Anchors independent of the reference computation.
    assert "pets/parrot.jpg" in files_under(photo_folder, "birds")
    assert "hot_dog.jpg" in files_under(photo_folder, "food")
    assert {"chelsea.png", "pets/cat.bmp"} <= files_under(photo_folder, "cats")
    assert "pets/pets.jpg" in files_under(photo_folder, "dogs")
    assert files_under(photo_folder, "all") == originals  # originals stay
    assert (photo_folder / "food/hot_dog.jpg").read_bytes() == (photo_folder / "all/hot_dog.jpg").read_bytes()


def test_run_prints_a_table_and_rerun_creates_a_new_complete_job(photo_folder):
    args = ("run", str(photo_folder), "--classes", "hotdog", "--weights", str(MOBILENET_TFLITE),
            "--model", "mobilenet_v2")
    first = imgclassify(*args)
    assert first.returncode == 0, first.stderr
    assert "hotdog" in first.stdout and "(failed)" in first.stdout and "8 images" in first.stdout
    second = imgclassify(*args)
    assert second.returncode == 0 and "resuming" not in second.stderr


@pytest.fixture
def many_photos(tmp_path, shared, litert_mobilenet) -> Path:
    root = tmp_path / "many"
    shutil.copytree(shared / "photos/imagenet-dev", root / "all")
    return root


def _results_count(root: Path) -> int:
    db = root / ".imgclassify/jobs.sqlite3"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _start_and_stop_midway(root: Path, sig: int) -> subprocess.CompletedProcess[str]:
    process = subprocess.Popen([IMGCLASSIFY, "run", str(root), "--classes", "dogs", "birds", "--model",
                                "mobilenet_v2", "--weights", str(MOBILENET_H5)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while _results_count(root) < 40:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(sig)
    out, err = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_run_resumes_without_reclassifying(many_photos, sig):
    stopped = _start_and_stop_midway(many_photos, sig)
    assert stopped.returncode == 130
    assert "Run the same command again to resume" in stopped.stderr
    done_before = _results_count(many_photos)
    assert 40 <= done_before < 309

    rerun = imgclassify("run", str(many_photos), "--classes", "dogs", "birds", "--model", "mobilenet_v2",
                        "--weights", str(MOBILENET_H5), "--json")

    assert rerun.returncode == 0, rerun.stderr
    view = json.loads(rerun.stdout)
    assert (view["processed"], view["failed"], view["number_of_files"], view["complete"]) == (309, 0, 309, True)
    # Only the images without a result went back to the model: every image classified exactly once.
    assert view["resumed"] == {"already_done": done_before, "published": 309 - done_before}
    assert view["matches"]["dogs"] == len(files_under(many_photos, "dogs")) >= 30


def test_killed_run_completes_exactly_on_rerun(many_photos):
    killed = _start_and_stop_midway(many_photos, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    done_before = _results_count(many_photos)

    rerun = imgclassify("run", str(many_photos), "--classes", "dogs", "birds", "--model", "mobilenet_v2",
                        "--weights", str(MOBILENET_H5), "--json")

    assert rerun.returncode == 0, rerun.stderr
    view = json.loads(rerun.stdout)
    assert (view["processed"], view["failed"], view["complete"]) == (309, 0, True)
    # The images in a worker's hands at the kill had no result yet: they, and only they, are classified again.
    assert view["resumed"] == {"already_done": done_before, "published": 309 - done_before}
    # Temporary files live in the state folder; none is left among the user's photos.
    assert not [p for p in many_photos.rglob("*partial*") if ".imgclassify" not in p.parts]


def test_serve_answers_the_old_clients_api(photo_folder, tmp_path):
    port = free_port()
    cats = tmp_path / "our-cats"  # a class taught by the server's own example folder
    cats.mkdir()
    for name in ("cat.bmp", "cat_720p.jpg"):
        shutil.copy(photo_folder / "all/pets" / name, cats / name)
    server = subprocess.Popen([IMGCLASSIFY, "serve", str(photo_folder), "--port", str(port), "--model",
                               "mobilenet_v2", "--weights", str(MOBILENET_TFLITE), "--examples", f"kitties={cats}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/classification-job"
    try:
        wait_for_http(f"{base}/{'0' * 32}", 120, server)
        created = requests.post(base, json={"classes": ["hotdog", "macaw"]}, timeout=30)
        assert created.status_code == 201
        job = created.json()
        percentages = []
        while True:
            status = requests.get(f"{base}/{job['id']}", timeout=10).json()
            percentages.append(status["percentage"])
            if status["complete"]:
                break
            time.sleep(0.2)
        assert percentages[-1] == 100 and status["processed"] == status["number_of_files"] == 8
        assert percentages == sorted(percentages)
        assert requests.post(base, data="nope", headers=JSON, timeout=10).status_code == 400
        assert requests.get(f"{base}/{'0' * 32}", timeout=10).status_code == 404
        # "kitties" is no word: a class only because `serve --examples` taught it.
        assert requests.post(base, json={"classes": ["glorps"], "match": "hierarchy"},
                             timeout=10).status_code == 400
        taught = requests.post(base, json={"classes": ["kitties"], "dry_run": True}, timeout=30)
        assert taught.status_code == 201, taught.text
        assert taught.json()["example_photos"] == {"kitties": 2}
        assert requests.get(f"{base}/{taught.json()['id']}", timeout=10).json()["examples"] == {
            "kitties": "examples/kitties/"}
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)


def test_serve_requires_the_service_key_when_one_is_set(tmp_path):
    (tmp_path / "all").mkdir()
    port = free_port()
    server = subprocess.Popen([IMGCLASSIFY, "serve", str(tmp_path), "--port", str(port), "--model", "mobilenet_v2",
                               "--weights", str(MOBILENET_TFLITE)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**os.environ, "SERVICE_KEY": "old-client-key"})
    base = f"http://127.0.0.1:{port}/classification-job"
    try:
        wait_for_http(f"{base}/{'0' * 32}", 60, server)
        denied = requests.post(base, json={"classes": ["dogs"]}, timeout=10)
        assert denied.status_code == 401 and denied.json()["field"] == "Authorization"
        allowed = requests.post(base, json={"classes": ["dogs"]}, headers={"Authorization": "old-client-key"},
                                timeout=10)
        assert allowed.status_code == 201
        assert requests.get(f"{base}/{allowed.json()['id']}", timeout=10).status_code == 401
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def test_status_prints_the_latest_job(photo_folder):
    ran = imgclassify("run", str(photo_folder), "--classes", "hotdog", "--weights", str(MOBILENET_TFLITE),
                      "--model", "mobilenet_v2", "--min-score", "0.3", "--top-k", "3", "--json")
    job = json.loads(ran.stdout)
    shown = imgclassify("status", str(photo_folder))
    assert shown.returncode == 0
    # The folder remembers how it was sorted: a later run without the flags asks the same, status says so.
    assert f"--weights {MOBILENET_TFLITE.resolve()}" in shown.stdout and "--min-score 0.3" in shown.stdout
    again = json.loads(imgclassify("run", str(photo_folder), "--classes", "hotdog", "--dry-run", "--json").stdout)
    assert (again["model"].split(":")[1], again["min_score"], again["top_k"]) == ("mobilenet_v2", 0.3, 3)
    # Readable by default: the job, what the class means, the table, each failure and where the page is.
    assert shown.stdout.startswith(f"job {job['id']} (") and "hotdog: hotdog.n.02" in shown.stdout
    assert "imgclassify report" in shown.stdout and "{" not in shown.stdout.splitlines()[0]
    raw = imgclassify("status", str(photo_folder), job["id"], "--json")
    assert json.loads(raw.stdout)["id"] == job["id"] and json.loads(raw.stdout)["processed"] == 8


@pytest.mark.parametrize("setup, args, message", [
    ("empty", ["--weights", "{h5}"], "all not found"),
    ("photos", ["--model", "vgg16"], "unknown model"),
    ("photos", ["--weights", "/no/such/file.h5"], "weights file not found"),
    ("photos", ["--workers", "0"], "--workers must be at least 1"),
])
def test_cheap_usage_errors_are_one_line_exit_2(tmp_path, capsys, setup, args, message):
    root = tmp_path / "dir"
    (root / "all" if setup == "photos" else root).mkdir(parents=True)
    args = [a.format(h5=MOBILENET_H5) for a in args]

    code = main(["run", str(root), "--classes", "dog", *args])

    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("imgclassify: error:") and message in err


@pytest.mark.parametrize("setup, args, message", [
    ("photos", ["--weights", "{bad}"], "cannot load"),
    ("photos", [], "needs internet"),
])
def test_usage_errors_are_one_line_without_traceback(tmp_path, setup, args, message):
    root = tmp_path / "dir"
    root.mkdir()
    if setup == "photos":
        (root / "all").mkdir()
    bad = tmp_path / "bad.weights.h5"
    bad.write_bytes(b"not weights")
    args = [a.format(h5=MOBILENET_H5, bad=bad) for a in args]
    # No network here; a proxy that refuses keeps a default-weights download from leaving the machine at all.
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}

    result = imgclassify("run", str(root), "--classes", "dog", *args, env=env)

    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("imgclassify: error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.stderr


def test_status_without_jobs_is_a_usage_error(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2 and "no jobs" in capsys.readouterr().err


def test_default_runtime_uses_the_guarded_litert_build_compiled_on_first_use(many_photos, litert_mobilenet):
    sidecars = {p.name: json.loads(p.read_text()) for p in litert_mobilenet.parent.glob("mobilenet_v2-*.json")}
    assert any(name.endswith("-fp32.json") for name in sidecars)
    for sidecar in sidecars.values():
        guard = sidecar["guard"]
        assert guard["images"] >= 50 and sidecar["accepted"] == (
            guard["top1_agreement"] >= 0.98 and guard["decision_agreement"] >= 0.99)
    accepted = {s["kind"] for s in sidecars.values() if s["accepted"]}
    chosen = next(kind for kind in ("int8", "int8-mixed", "fp32") if kind in accepted)

    run = imgclassify("run", str(many_photos), "--classes", "dogs", "--model", "mobilenet_v2", "--weights",
                      str(MOBILENET_H5), "--json")

    assert run.returncode == 0 and "compiling" not in run.stderr, run.stderr
    view = json.loads(run.stdout)
    assert view["model"] == f"litert:mobilenet_v2:{litert_mobilenet.name}"
    assert litert_mobilenet.name.endswith(f"-{chosen}.tflite") and view["processed"] == 309
    # The build names its model: given alone it is MobileNetV2; named as another, one line when it loads.
    few = many_photos.parent / "few"
    (few / "all").mkdir(parents=True)
    for photo in sorted((many_photos / "all").iterdir())[:3]:
        shutil.copy(photo, few / "all" / photo.name)
    alone = imgclassify("run", str(few), "--classes", "dogs", "--weights", str(litert_mobilenet), "--json")
    assert alone.returncode == 0 and json.loads(alone.stdout)["model"].startswith("litert:mobilenet_v2:")
    from common.domain.errors import ConfigurationError
    from common.inference.litert import LiteRTClassifier

    with pytest.raises(ConfigurationError, match="pass --model mobilenet_v2"):
        LiteRTClassifier("resnet50", str(litert_mobilenet))


def _serve(root: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    server = subprocess.Popen([IMGCLASSIFY, "serve", str(root), "--port", str(port), "--model", "mobilenet_v2",
                               "--weights", str(MOBILENET_TFLITE), *extra],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}/classification-job"
    wait_for_http(f"{base}/{'0' * 32}", 120, server)
    return server, base


def test_serve_stays_up_under_a_flood_of_jobs_and_slow_clients(many_photos):
    import socket

    server, base = _serve(many_photos, "--max-queued", "100")
    slow = []
    try:
        answers = [requests.post(base, json={"classes": ["dogs"]}, timeout=30) for _ in range(5)]
        refused = [a for a in answers if a.status_code == 429]
        assert answers[0].status_code == 201 and refused, [a.status_code for a in answers]
        assert all(a.headers["Retry-After"].isdigit() and a.json()["code"] == 429 for a in refused)
        port = int(base.split(":")[2].split("/")[0])
        for _ in range(50):  # clients that send half a request and wait
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /classification-job/" + b"0" * 32 + b" HTTP/1.1\r\nHost: x\r\n")
            slow.append(sock)
        started = time.monotonic()
        status = requests.get(f"{base}/{answers[0].json()['id']}", timeout=10)
        assert status.status_code == 200 and time.monotonic() - started < 5
        options = requests.options(base, timeout=10)
        assert options.headers["Content-Type"] == "application/json" and "POST" in options.json()["allow"]
        wrong = requests.delete(base, timeout=10)
        assert wrong.status_code == 405 and wrong.json()["field"] == "method"
        nested = requests.post(base, data="[" * 30000 + "]" * 30000, headers=JSON, timeout=10)
        assert nested.status_code in (400, 413) and nested.json()["field"] == "body"
    finally:
        for sock in slow:
            sock.close()
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)


def test_serve_resumes_the_jobs_a_killed_server_left_unfinished(many_photos):
    server, base = _serve(many_photos)
    try:
        job = requests.post(base, json={"classes": ["dogs", "birds"]}, timeout=30).json()
        deadline = time.monotonic() + 120
        while _results_count(many_photos) < 20:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        server.kill()
        server.communicate(timeout=30)
    assert _results_count(many_photos) < 309, "the job finished before the kill: nothing to resume"

    server, base = _serve(many_photos)
    try:
        deadline = time.monotonic() + 120
        while not (status := requests.get(f"{base}/{job['id']}", timeout=10).json())["complete"]:
            assert time.monotonic() < deadline, status
            time.sleep(0.2)
        assert (status["processed"] + status["failed"], status["number_of_files"]) == (309, 309)
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)


def test_run_sorts_any_folder_into_an_output_folder_and_follows_a_linked_all(photo_folder, tmp_path):
    before = {p: p.read_bytes() for p in (photo_folder / "all").rglob("*") if p.is_file()}
    sorted_out = tmp_path / "sorted"
    elsewhere = imgclassify("run", str(photo_folder / "all"), "--out", str(sorted_out), "--classes", "cats",
                            "--model", "mobilenet_v2", "--weights", str(MOBILENET_TFLITE), "--json")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "all").symlink_to(photo_folder / "all")
    through_link = imgclassify("run", str(linked), "--classes", "cats", "--model", "mobilenet_v2", "--weights",
                               str(MOBILENET_TFLITE), "--json")

    assert elsewhere.returncode == 0 and through_link.returncode == 0, elsewhere.stderr + through_link.stderr
    assert json.loads(elsewhere.stdout)["processed"] == json.loads(through_link.stdout)["processed"] == 8
    assert files_under(sorted_out, "cats") == files_under(linked, "cats") and "chelsea.png" in files_under(
        sorted_out, "cats")
    assert {p: p.read_bytes() for p in (photo_folder / "all").rglob("*") if p.is_file()} == before
    inside = imgclassify("run", str(photo_folder / "all"), "--out", str(photo_folder / "all/sorted"),
                         "--classes", "cats", "--model", "mobilenet_v2", "--weights", str(MOBILENET_TFLITE))
    assert inside.returncode == 2 and "inside" in inside.stderr


def test_watch_sorts_photos_copied_in_while_it_runs_and_stops_cleanly(tmp_path, shared):
    root = tmp_path / "dropbox"
    (root / "all").mkdir(parents=True)
    photos = sorted((shared / "photos/imagenet-dev").iterdir())[:12]
    for path in photos[:4]:  # already there
        shutil.copy(path, root / "all" / path.name)
    watch = subprocess.Popen([IMGCLASSIFY, "watch", str(root), "--classes", "dog", "bird", "--model",
                              "mobilenet_v2", "--weights", str(MOBILENET_TFLITE), "--json"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while _results_count(root) < 4:
            assert watch.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        (root / "all/later").mkdir()
        for path in photos[4:]:  # arrive while it runs, one slowly (written in two halves)
            shutil.copy(path, root / "all/later" / path.name)
        slow = root / "all/later/slow.JPEG"
        data = photos[0].read_bytes()
        with open(slow, "wb") as handle:
            handle.write(data[: len(data) // 2])
            handle.flush()
            time.sleep(0.5)
            handle.write(data[len(data) // 2:])
        while _results_count(root) < 13:
            assert watch.poll() is None and time.monotonic() < deadline, _results_count(root)
            time.sleep(0.1)
    finally:
        watch.send_signal(signal.SIGINT)
        out, err = watch.communicate(timeout=60)
    assert watch.returncode == 0, err
    view = json.loads(out)
    assert (view["state"], view["number_of_files"], view["processed"], view["failed"]) == ("complete", 13, 13, 0)
    assert "watching" in err
