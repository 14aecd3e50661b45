"""The old system's downloader-uploader beside the emulated pipeline (`imgclassify emulate --uploader DIR`): the
operator's Flask app (mungujn/downloader-uploader or their copy) started from DIR with its code untouched, as deploy.sh
starts it on Cloud Run — `python -m flask --app service run` — with its working folder (BASE/FOLDER/SUB_FOLDER) the
mounted bucket and the same SERVICE_KEY as the functions, on a loopback port (8081, where the old client looks).

It runs as a child process with the Python running imgclassify unless told another (`--uploader-python`): DIR is
first on its sys.path, so DIR's own modules (its `common/`, a Dropbox stand-in) win over anything installed. What it
cannot import (the real app's `dropbox` SDK is not in imgclassify's environment) stops emulate at start with the
module's name; docs/pipeline.md has the measurements behind this choice.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from imgclassify.cli import dotenv
from imgclassify.cli.options import UsageError

ROUTES = "POST /download-job, POST /upload-job; the bucket is its folder"


@dataclass
class UploaderProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self) -> None:
        """End the process this module started (by its PID), before the mount it works in goes away."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def check_source(source: Path) -> Path:
    """DIR as deploy.sh checks it: the folder holding service.py, the Flask app `flask --app service` loads."""
    if not (source / "service.py").is_file():
        raise UsageError(f"--uploader {source} is not a downloader-uploader's source folder (no service.py)")
    return source.resolve()


def check_python(python: str | None) -> str:
    if python is None:
        return sys.executable
    found = Path(python).expanduser()
    if not (found.is_file() and os.access(found, os.X_OK)):
        raise UsageError(f"--uploader-python {python} is not an executable file")
    return str(found.absolute())  # absolute, not resolved: a virtualenv's python is a symlink that must stay one


def resolve_key(source: Path, key_source: str) -> str:
    """The key for both the functions and the downloader-uploader: the environment's or ./.env's as already loaded
    (`key_source`), else SERVICE_KEY from DIR/.env, where the old service kept it. Only that name is taken from
    DIR/.env. None at all is a usage error: the downloader-uploader refuses every request without one."""
    if key_source:
        return key_source
    scratch = dict(os.environ)
    loaded = dotenv.load([source], scratch)
    if "SERVICE_KEY" not in loaded.sources:
        raise UsageError(f"--uploader needs SERVICE_KEY (the environment, ./.env or {source / '.env'}): the "
                         f"downloader-uploader refuses every request without one")
    os.environ["SERVICE_KEY"] = scratch["SERVICE_KEY"]
    return str(loaded.sources["SERVICE_KEY"])


def check_port_free(port: int) -> None:
    """Refuse a taken port before starting: an old downloader-uploader still listening there would answer the
    readiness check in place of the one started here."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise UsageError(f"port {port} is in use (a downloader-uploader still running?): stop it or pass "
                             f"--uploader-port") from None


def working_folder_env(folder: Path) -> dict[str, str]:
    """BASE/FOLDER/SUB_FOLDER that its functions.py joins into `folder` (os.path.join(BASE, FOLDER, SUB_FOLDER))."""
    return {"BASE": str(folder.parent), "FOLDER": folder.name, "SUB_FOLDER": ""}


def start_uploader(source: Path, working: Path, port: int, python: str, log_dir: Path,
                   timeout: float = 60) -> UploaderProcess:
    """Start the app in `source` on 127.0.0.1:port working in `working`; return once it accepts connections."""
    check_port_free(port)
    log_path = log_dir / "downloader-uploader.log"
    # --no-reload, --no-debugger: one process to stop by its PID whatever FLASK_DEBUG a .env or .flaskenv sets (the
    # reloader would fork a child serving the port); PYTHONUNBUFFERED: its log is readable while it runs.
    argv = [python, "-m", "flask", "--app", "service", "run", "--host", "127.0.0.1", "--port", str(port),
            "--no-reload", "--no-debugger"]
    env = {**os.environ, **working_folder_env(working), "PYTHONUNBUFFERED": "1"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(argv, cwd=source, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    started = UploaderProcess(process, f"http://127.0.0.1:{port}", log_path)
    _wait_until_listening(started, port, timeout)
    return started


def _wait_until_listening(started: UploaderProcess, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not _accepts(port):
        if started.process.poll() is not None or time.monotonic() > deadline:
            started.stop()
            raise UsageError(f"the downloader-uploader did not start: {_last_line(started.log_path)} (log: "
                             f"{started.log_path}; another environment: --uploader-python PATH)")
        time.sleep(0.1)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _last_line(log_path: Path) -> str:
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no output"
