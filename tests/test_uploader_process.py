"""`emulate --uploader DIR`'s process handling without the emulators: the stand-in downloader-uploader's source
folder (tests/standins/downloader_uploader_app) started as the operator's app would be, on a plain folder, and the
checks that stop emulate before anything starts."""
from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
import requests

from imgclassify.cli import main
from imgclassify.cli.options import UsageError
from imgclassify.cli.uploader_process import resolve_key, start_uploader, working_folder_env
from imgclassify.emulation import free_port

STANDIN_DIR = Path(__file__).parent / "standins" / "downloader_uploader_app"


def test_the_working_folder_is_what_the_old_service_joins_from_base_folder_and_sub_folder(tmp_path):
    env = working_folder_env(tmp_path / "bucket")
    assert os.path.join(env["BASE"], env["FOLDER"], env["SUB_FOLDER"]).rstrip("/") == str(tmp_path / "bucket")


def test_it_serves_its_routes_in_the_given_folder_with_the_key_and_stops_by_its_pid(tmp_path, monkeypatch):
    working, dropbox = tmp_path / "bucket", tmp_path / "dropbox"
    (working / "all").mkdir(parents=True)
    (dropbox / "all").mkdir(parents=True)
    (dropbox / "all" / "a.jpg").write_bytes(b"photo")
    monkeypatch.setenv("SERVICE_KEY", "k")
    monkeypatch.setenv("STANDIN_DROPBOX", str(dropbox))
    monkeypatch.setenv("STANDIN_DROPBOX_TOKEN", "t")
    uploader = start_uploader(STANDIN_DIR, working, free_port(), sys.executable, tmp_path)
    try:
        assert requests.post(f"{uploader.url}/download-job", timeout=10).status_code == 401
        job = requests.post(f"{uploader.url}/download-job", headers={"Authorization": "k", "Token": "t"}, timeout=10)
        assert job.status_code == 201, job.text
        status = {"complete": False}
        while not status["complete"]:
            status = requests.get(f"{uploader.url}/download-job/{job.json()['id']}", headers={"Authorization": "k"},
                                  timeout=10).json()
        assert (working / "all" / "a.jpg").read_bytes() == b"photo"  # BASE/FOLDER/SUB_FOLDER is the folder given
    finally:
        uploader.stop()
    assert uploader.process.returncode is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{uploader.url}/download-job/1", timeout=5)


def test_an_app_that_cannot_start_is_one_line_naming_why(tmp_path):
    source = tmp_path / "downloader-uploader"
    source.mkdir()
    (source / "service.py").write_text("import dropbox_sdk_not_installed\n")
    with pytest.raises(UsageError, match="did not start: ModuleNotFoundError: No module named "
                                         "'dropbox_sdk_not_installed'.*--uploader-python"):
        start_uploader(source, tmp_path, free_port(), sys.executable, tmp_path)


def test_a_taken_port_is_refused_before_starting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(UsageError, match="is in use"):
            start_uploader(STANDIN_DIR, tmp_path, taken.getsockname()[1], sys.executable, tmp_path)


def test_the_key_comes_from_dir_env_when_neither_the_environment_nor_dot_env_has_one(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVICE_KEY", "")  # recorded, so that the key resolve_key sets is removed afterwards
    monkeypatch.delenv("SERVICE_KEY")
    (tmp_path / ".env").write_text("SERVICE_KEY=from-its-env\nACCESS_TOKEN=dropbox\n")
    assert resolve_key(tmp_path, "") == str(tmp_path / ".env")
    assert os.environ["SERVICE_KEY"] == "from-its-env" and "ACCESS_TOKEN" not in os.environ  # the key only
    assert resolve_key(tmp_path, "the environment") == "the environment"


@pytest.mark.parametrize("args, message", [
    (["--uploader", "{tmp}/nowhere"], "is not a downloader-uploader's source folder (no service.py)"),
    (["--uploader", "{standin}"], "--uploader needs SERVICE_KEY"),
    (["--uploader-python", "{tmp}/python"], "--uploader-python needs --uploader DIR"),
    (["--uploader", "{standin}", "--uploader-port", "8080", "--port", "8080"], "is the gateway's --port"),
])
def test_emulate_refuses_a_wrong_uploader_in_one_line_before_starting_anything(tmp_path, monkeypatch, capsys, args,
                                                                               message):
    monkeypatch.setenv("SERVICE_KEY", "")
    monkeypatch.delenv("SERVICE_KEY")
    monkeypatch.chdir(tmp_path)  # no ./.env here
    argv = [a.format(tmp=tmp_path, standin=STANDIN_DIR) for a in args]
    if "--uploader-port" in argv:
        monkeypatch.setenv("SERVICE_KEY", "k")
    code = main(["emulate", *argv, "--model", "mobilenet_v2", "--weights", "none"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err

