"""The old system end to end on `imgclassify serve` (issue 32): the old client's flow — download, classify, upload —
through a stand-in downloader-uploader (tests/standins, from its contract) and a stand-in Dropbox (a folder) ends
with the sorted photos under Dropbox `/<class>/`. The key comes from a `.env` in DIR, as the old services read it;
an old client's spellings each get their folder; a word no rule knows is sorted by the old rule, not refused."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from imgclassify.emulation import free_port, wait_for_http
from tests.conftest import MOBILENET_TFLITE
from tests.standins.downloader_uploader import DownloaderUploader, serve_in_thread
from tests.standins.old_client import OldClient

IMGCLASSIFY = str(Path(sys.executable).with_name("imgclassify"))
KEY, TOKEN = "old-system-key", "dropbox-token"
PHOTOS = {"coral": ("cat.bmp", "cat_720p.jpg", "imprinting_dog_test_0.bmp", "parrot.jpg", "hot_dog.jpg",
                    "grace_hopper.bmp"), "skimage": ("chelsea.png",)}


@pytest.fixture(scope="module")
def system(tmp_path_factory, shared):
    """Dropbox with photos under /all, the downloader-uploader's empty working folder (its .env holding the key,
    as the old services kept it), `serve` on that folder and the stand-in downloader-uploader."""
    root = tmp_path_factory.mktemp("old-system")
    dropbox, working = root / "dropbox", root / "work"
    (dropbox / "all").mkdir(parents=True)
    (working / "all").mkdir(parents=True)
    for folder, names in PHOTOS.items():
        for name in names:
            shutil.copy(shared / "photos" / folder / name, dropbox / "all" / name)
    (working / ".env").write_text(f"# the old services' key\nSERVICE_KEY={KEY}\nACCESS_TOKEN={TOKEN}\n")
    port, uploader_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SERVICE_KEY", "DEFAULT_MATCH")}
    server = subprocess.Popen([IMGCLASSIFY, "serve", str(working), "--port", str(port), "--model", "mobilenet_v2",
                               "--weights", str(MOBILENET_TFLITE)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env=env, cwd=root)
    standin = DownloaderUploader(working, dropbox, KEY, TOKEN)
    uploader = serve_in_thread(standin.app, uploader_port)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/classification-job/{'0' * 32}", 120, server)
        client = OldClient(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{uploader_port}", KEY, TOKEN)
        yield client, standin, dropbox, working, server
    finally:
        uploader.shutdown()
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=60)


def uploaded(standin: DownloaderUploader, dropbox: Path, classes) -> dict[str, set[str]]:
    """Dropbox's class folders once every upload job is done (the old client waits for the last one only)."""
    deadline = time.monotonic() + 30
    while not all(job["complete"] for job in standin.jobs.values()):
        assert time.monotonic() < deadline, standin.jobs
        time.sleep(0.05)
    return {c: {p.name for p in (dropbox / c).iterdir()} if (dropbox / c).is_dir() else set() for c in classes}


def test_the_old_client_flow_puts_the_sorted_photos_in_dropbox_per_class_as_spelled(system):
    client, standin, dropbox, working, server = system
    classes = ["cat", "Cat", "dog", "car "]
    outcome = client.run(classes)
    assert outcome["classification"]["percentage"] == 100 and outcome["classification"]["complete"]
    assert {p.name for p in (working / "all").iterdir()} == {p.name for p in (dropbox / "all").iterdir()}
    sent = uploaded(standin, dropbox, classes)
    # Each spelling its own folder, holding the same photos; the cats and the dog reached Dropbox.
    assert sent["cat"] == sent["Cat"] and {"chelsea.png", "cat.bmp"} <= sent["cat"], sent
    assert "imprinting_dog_test_0.bmp" in sent["dog"] and sent["car "] == set(), sent
    for name in ("cat", "Cat", "dog"):
        assert sent[name] == {p.name for p in (working / name).iterdir()}
        assert all((dropbox / name / n).read_bytes() == (dropbox / "all" / n).read_bytes() for n in sent[name])
    # A re-run makes no duplicates (the same names, overwritten).
    client.run(["cat"])
    assert uploaded(standin, dropbox, ["cat"])["cat"] == sent["cat"]


def test_a_word_no_rule_knows_is_sorted_by_the_old_rule_for_an_old_client(system):
    client, standin, dropbox, working, _ = system
    job = client.step("classification", ["selfie", "cat"])
    assert job["complete"] and job["percentage"] == 100 and job["failed"] == 0
    assert (working / "cat").is_dir() and not (working / "selfie").exists()
    # A new client (any field besides classes) still gets the 400 naming the word.
    refused = requests.post(f"{client.classifier}/classification-job", headers=client.headers, timeout=30,
                            json={"classes": ["selfie"], "top_k": 5})
    assert refused.status_code == 400 and refused.json()["field"] == "classes"


def test_the_key_from_dir_env_is_enforced(system):
    client, *_ = system
    base = f"{client.classifier}/classification-job"
    denied = requests.post(base, json={"classes": ["dog"]}, timeout=10)
    assert denied.status_code == 401 and denied.json()["field"] == "Authorization"
    assert requests.post(base, json={"classes": ["dog"]}, headers={"Authorization": "wrong"},
                         timeout=10).status_code == 401


def test_serve_says_whether_requests_need_a_key_and_refuses_an_open_address_without_one(tmp_path):
    (tmp_path / "all").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_KEY"}
    refused = subprocess.run([IMGCLASSIFY, "serve", str(tmp_path), "--host", "0.0.0.0", "--weights", "none"],
                             capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert refused.returncode == 2 and "--insecure-no-key" in refused.stderr and "SERVICE_KEY" in refused.stderr
    port = free_port()
    server = subprocess.Popen([IMGCLASSIFY, "serve", str(tmp_path), "--port", str(port), "--model", "mobilenet_v2",
                               "--weights", str(MOBILENET_TFLITE), "--match", "substring"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/classification-job/{'0' * 32}", 120, server)
        job = requests.post(f"http://127.0.0.1:{port}/classification-job", json={"classes": ["cat"]}, timeout=30)
        assert job.status_code == 201 and job.json()["match"] == "substring"
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=60)
    assert "requests need no key" in err and "default match rule: substring" in err
    kept = json.loads((tmp_path / ".imgclassify/settings.json").read_text())
    assert kept["default_match"] == "substring"  # remembered: the next serve of this folder sorts so too


def test_env_files_are_read_as_python_dotenv_reads_them_and_the_environment_wins(tmp_path):
    from imgclassify.cli import dotenv

    assert dotenv.parse("# key\nexport SERVICE_KEY='a b'\nX=\"1\\n2\" \nY = plain # note\nnot a line\nZ=\n") == {
        "SERVICE_KEY": "a b", "X": "1\n2", "Y": "plain", "Z": ""}
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir/.env").write_text("SERVICE_KEY=from-dir\nA=dir\n")
    (tmp_path / ".env").write_text("SERVICE_KEY=from-cwd\nB=cwd\nA=cwd\n")
    env = {"B": "environment"}
    loaded = dotenv.load([tmp_path / "dir", tmp_path], env)
    assert env == {"SERVICE_KEY": "from-dir", "A": "dir", "B": "environment"}
    assert loaded.source("SERVICE_KEY", env) == str((tmp_path / "dir/.env").resolve())
    assert loaded.source("B", env) == "the environment" and loaded.source("C", env) == ""


def test_the_default_match_rule_is_a_setting_and_old_clients_spellings_are_kept():
    from common.config import Settings
    from common.domain.errors import ConfigurationError
    from common.domain.requests import old_rule_for_unknown_words, parse_job_request

    defaults = Settings.from_env({"DEFAULT_MATCH": "substring"}).job_defaults
    assert parse_job_request({"classes": ["cat"]}, defaults).spec.match == "substring"
    assert parse_job_request({"classes": ["cat"], "match": "label"}, defaults).spec.match == "label"
    with pytest.raises(ConfigurationError, match="DEFAULT_MATCH"):
        Settings.from_env({"DEFAULT_MATCH": "fuzzy"})
    plain = Settings.from_env({}).job_defaults
    old = parse_job_request({"classes": ["cat", "Cat", "cat", "car "]}, plain).spec
    assert old.classes == ("cat", "Cat", "car ") and old.match == "hierarchy"
    assert parse_job_request({"classes": ["cat", "Cat", "car "], "top_k": 5}, plain).spec.classes == ("cat", "car")
    body = {"classes": ["selfie", "cat"]}
    spec, warnings = old_rule_for_unknown_words(body, parse_job_request(body, plain).spec)
    assert spec.match == "substring" and spec.min_score == 0.0 and "'selfie'" in warnings[0]
    body = {"classes": ["selfie"], "match": "hierarchy"}
    assert old_rule_for_unknown_words(body, parse_job_request(body, plain).spec)[1] == []


def test_serve_listens_beyond_loopback_with_the_key_from_the_working_directorys_env(tmp_path):
    (tmp_path / "photos/all").mkdir(parents=True)
    (tmp_path / ".env").write_text("export SERVICE_KEY='from the old setup'\n")
    env = {k: v for k, v in os.environ.items() if k != "SERVICE_KEY"}
    port = free_port()
    server = subprocess.Popen([IMGCLASSIFY, "serve", str(tmp_path / "photos"), "--host", "0.0.0.0", "--port",
                               str(port), "--model", "mobilenet_v2", "--weights", str(MOBILENET_TFLITE)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/classification-job/{'0' * 32}", 120, server)
        base = f"http://127.0.0.1:{port}/classification-job"
        assert requests.post(base, json={"classes": ["dog"]}, timeout=10).status_code == 401
        allowed = requests.post(base, json={"classes": ["dog"]}, headers={"Authorization": "from the old setup"},
                                timeout=30)
        assert allowed.status_code == 201, allowed.text
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=60)
    assert f"SERVICE_KEY from {(tmp_path / '.env').resolve()}" in err and "http://0.0.0.0:" in err, err
    assert "--allowed-host" in err
