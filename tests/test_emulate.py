"""`imgclassify emulate` as a new user runs it (from another folder, relative paths), and a misconfigured
classify_image on the emulators: nothing hangs silently."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from imgclassify.cli import main
from imgclassify.emulation import free_port
from tests.conftest import MOBILENET_TFLITE

pytestmark = [pytest.mark.emulator, pytest.mark.slow]
IMGCLASSIFY = str(Path(sys.executable).with_name("imgclassify"))


@pytest.mark.parametrize("weights, message", [
    ("no/such/weights.h5", "weights file not found"),
    ("{garbage}", "cannot load"),
])
def test_emulate_with_weights_that_cannot_load_stops_with_one_line_before_starting_anything(
        tmp_path, capsys, weights, message):
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"not a model" * 100)

    code = main(["emulate", "--model", "mobilenet_v2", "--weights", weights.format(garbage=garbage)])

    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("imgclassify: error:") and "Traceback" not in err


def test_emulate_from_another_folder_runs_a_job_shows_progress_and_cleans_up(tmp_path, shared):
    """Also: without --mount it says at start that the copies go to the bucket, not to any folder."""
    upload = tmp_path / "photos"
    upload.mkdir()
    for name in ("parrot.jpg", "hot_dog.jpg", "cat.bmp", "grace_hopper.bmp", "COPYRIGHT"):
        (upload / name).write_bytes((shared / "photos/coral" / name).read_bytes())  # COPYRIGHT: not a photo
    port = free_port()
    relative_weights = os.path.relpath(MOBILENET_TFLITE, tmp_path)
    process = subprocess.Popen([IMGCLASSIFY, "emulate", "--port", str(port), "--upload", "photos", "--model",
                                "mobilenet_v2", "--weights", relative_weights, "--workers", "3"],
                               cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []

    def read_until(pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            assert line or process.poll() is None, "".join(lines)
            lines.append(line)
            found = re.search(pattern, line)
            if found:
                return found
        pytest.fail("".join(lines))

    try:
        read_until(r"pipeline up \(litert:mobilenet_v2:.*, 3 at once\)", 120)
        assert any("uploaded 4 photos" in line for line in lines)
        assert any("left out 1 files that are not photos by their name: COPYRIGHT" in line for line in lines)
        logs = read_until(r"logs: (\S+);", 10).group(1)
        # no --mount: the user is told the copies reach no folder (a downloader-uploader would find none)
        [where] = [line for line in lines if "copies are written to gs://images/<class>/" in line]
        assert "not to any folder" in where and "--mount FOLDER" in where and "--uploader DIR" in where
        job = requests.post(f"http://127.0.0.1:{port}/classification-job", json={"classes": ["macaw", "hotdog"]},
                            timeout=60).json()
        done = read_until(rf"job {job['id']}: complete 4/4 \(100%\)  macaw (\d), hotdog (\d)", 120)
        assert done.groups() == ("1", "1") and "copies under gs://images/<class>/" in lines[-1]
        front = requests.get(f"http://127.0.0.1:{port}/", timeout=30)  # the front page, as `serve` has it
        assert front.status_code == 200 and f'data-job="{job["id"]}" data-state="complete"' in front.text
        assert 'id="new-job"' in front.text
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=60)
    assert process.returncode == 0
    assert not Path(logs).exists()  # the emulators' temporary folder is gone


def test_a_classify_image_that_cannot_load_its_model_stalls_the_job_then_its_dead_letters_finish_it(emulators,
                                                                                                    tmp_path):
    """The job says why it is stuck at once; once Pub/Sub gives up on the image (5 deliveries here, 10 deployed),
    the dead-letter consumer records it as failed and the job completes (issue 21)."""
    from common.adapters.gcp import GcsObjectStore, storage_client
    from imgclassify.local_stack import LocalStack
    from tests.fakes import solid_jpeg

    stack = LocalStack(emulators, bucket="stalled-bucket", topic="classify-stalled", subscription="stalled-push",
                       max_delivery_attempts=5,
                       function_env={"MODEL": "mobilenet_v2", "MODEL_WEIGHTS": str(tmp_path / "gone.tflite")})
    stack.start()
    try:
        GcsObjectStore(storage_client(emulators.project)).write(stack.bucket, "all/a.jpg", solid_jpeg("red"))
        job = requests.post(f"{stack.gateway_url}/classification-job", json={"classes": ["cat"]}, timeout=60).json()
        deadline = time.monotonic() + 60
        while (status := requests.get(job["status_url"], timeout=10).json())["state"] != "stalled":
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        assert status["complete"] is False and "weights file not found" in status["errors"][0]
        deadline = time.monotonic() + 240
        while not (status := requests.get(job["status_url"], timeout=10).json())["complete"]:
            assert time.monotonic() < deadline, status
            time.sleep(0.5)
        results = requests.get(job["status_url"] + "/report?format=jsonl", timeout=10).text
        assert status["failed"] == 1 and "gave up after 5 deliveries" in results
    finally:
        stack.stop()
