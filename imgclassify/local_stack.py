"""The functions on the emulators, as deployed: the five functions under functions-framework (supervised: a killed
instance is replaced), the topics, a push subscription per event-triggered function with its declared ack deadline
and dead-letter policy, and a one-port gateway in front of the HTTP functions. What is deployed is read from
common/infrastructure.py, as deploy.sh reads it."""
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
from common.infrastructure import CloudFunction, Delivery, Topic, Topics, Trigger, functions
from common.routes import JOB_PATH, LOOPBACK_HOSTS, Action, Function, check_host, match
from common.domain.errors import NotFound

# The subscription pushing each topic to its function, named after the stack's `subscription` (stacks sharing the
# emulators each have their own).
SUBSCRIPTION_SUFFIXES = {Topic.FANOUT: "", Topic.UPLOADS: "-objects", Topic.DEAD_LETTER: "-dead-letters"}


@dataclass
class LocalStack:
    """The emulators plus the functions, their topics and push subscriptions, and a one-port gateway."""

    emulators: Emulators
    bucket: str = "images"
    topic: str = "classify-image"
    subscription: str = "classify-image-push"
    job_events_topic: str = "job-events"
    # None: as deployed (common/infrastructure.py). Tests shorten them so that lost deliveries and dead letters
    # play out in seconds.
    ack_deadline: int | None = None
    max_delivery_attempts: int | None = None
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
            for function in functions():
                name = function.entry_point
                source = self.sources.get(name, function.source)
                port = free_port()
                self.function_ports[name] = port
                # One log per stack and function: stacks sharing the emulators do not overwrite each other's logs.
                self._commands[name] = [framework, "--target", name, "--source", source, "--signature-type",
                                        function.signature, "--host", LOOPBACK, "--port", str(port)]
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
        self._create_topics()
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
        self._create_topics()

    @property
    def topics(self) -> Topics:
        """The deployed topics' names here. fake-gcs-server publishes every object written on the emulators' own
        topic, as the bucket's notification publishes uploads deployed."""
        return Topics.named(self.topic, self.job_events_topic, uploads=self.emulators.object_events_topic)

    @property
    def dead_letter_topic(self) -> str:
        return self.topics.dead_letter

    def _create_topics(self) -> None:
        for topic in Topic:
            if topic != Topic.UPLOADS:  # the emulators' own, made before any object is written
                self.emulators.create_topic(self.topics.name(topic))

    def _pushed(self) -> list[tuple[CloudFunction, Topic, Delivery]]:
        """Each event-triggered function, the topic pushed to it and its subscription's delivery policy."""
        pushed = []
        for function in functions():
            if function.trigger == Trigger.TOPIC and function.topic and function.delivery:
                pushed.append((function, function.topic, function.delivery))
        return pushed

    def _subscription_path(self, topic: Topic) -> str:
        return f"projects/{self.emulators.project}/subscriptions/{self.subscription}{SUBSCRIPTION_SUFFIXES[topic]}"

    def subscription_requests(self) -> list[dict[str, Any]]:
        """What is asked of Pub/Sub's CreateSubscription for each event-triggered function: a push to its local URL
        with the declared delivery policy, as deploy.sh sets it on Eventarc's subscription. Backoff is left out:
        the emulator's redeliveries stay immediate."""
        topics = f"projects/{self.emulators.project}/topics"
        requests = []
        for function, topic, delivery in self._pushed():
            request: dict[str, Any] = {
                "name": self._subscription_path(topic), "topic": f"{topics}/{self.topics.name(topic)}",
                "push_config": {"push_endpoint": self.function_url(function.entry_point) + "/"},
                "ack_deadline_seconds": delivery.ack_deadline_seconds if self.ack_deadline is None
                else self.ack_deadline}
            if delivery.dead_letter:
                request["dead_letter_policy"] = {
                    "dead_letter_topic": f"{topics}/{self.topics.dead_letter}",
                    "max_delivery_attempts": delivery.max_delivery_attempts if self.max_delivery_attempts is None
                    else self.max_delivery_attempts}
            requests.append(request)
        return requests

    def _create_push_subscription(self) -> None:
        from google.api_core import exceptions as gexc
        from google.cloud import pubsub_v1

        with environ(self.emulators.env):
            subscriber = pubsub_v1.SubscriberClient()
            for request in self.subscription_requests():
                try:
                    subscriber.delete_subscription(subscription=request["name"])
                except gexc.NotFound:
                    pass
                subscriber.create_subscription(request=request)
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
            for _, topic, _ in self._pushed():
                try:
                    subscriber.delete_subscription(subscription=self._subscription_path(topic), timeout=10)
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


def gateway_app(function_urls: dict[Function, str],
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
    from common.pages import FrontPage, render_index

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
                page = render_index(FrontPage(jobs()), class_vocabulary(), JOB_PATH)
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

