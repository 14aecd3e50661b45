"""The infrastructure, declared once: the functions and what triggers each, the topics, each push subscription's
delivery policy (ack deadline, dead-letter topic and delivery cap, backoff), each function's size, and the service
identities with their roles. deploy.sh reads it and imgclassify/local_stack.py builds the emulated stack from it,
so the emulated stack is the deployed one by construction. No I/O.

  python -m common.infrastructure --topic classify-image --events-topic job-events --runtime litert --with-key

prints every record for a deployment with those options, one a line: its kind (function, package, subscription,
topic, hold, service, identity, grant), then its fields separated by spaces, "-" for none. --with-uploader adds the
old system's downloader-uploader (UPLOADER), its identity and its grants.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from common.domain.jobs import DELIVERY_DEADLINE_SECONDS
from common.domain.options import Runtime, choices
from common.routes import Function


class Trigger(StrEnum):
    HTTP = "http"
    TOPIC = "topic"  # a Pub/Sub topic, pushed to the function by a subscription (Eventarc's, deployed)


class Topic(StrEnum):
    """The topics by what they carry; their names are the deployment's (Topics)."""

    FANOUT = "fanout"  # one message per image: create_job and object_arrived publish, classify_image consumes
    UPLOADS = "uploads"  # the bucket's OBJECT_FINALIZE notifications under all/: object_arrived consumes
    DEAD_LETTER = "dead-letter"  # what Pub/Sub gave up on: dead_letter consumes
    EVENTS = "events"  # job completion events, for the operator's own subscribers


@dataclass(frozen=True)
class Topics:
    """The topics' names. The dead-letter topic and its holding subscription are named after the fan-out topic."""

    fanout: str
    uploads: str
    events: str

    @classmethod
    def named(cls, fanout: str, events: str, uploads: str = "") -> Topics:
        return cls(fanout, uploads or f"{fanout}-uploads", events)

    @property
    def dead_letter(self) -> str:
        return f"{self.fanout}-dead-letter"

    def name(self, topic: Topic) -> str:
        return {Topic.FANOUT: self.fanout, Topic.UPLOADS: self.uploads, Topic.DEAD_LETTER: self.dead_letter,
                Topic.EVENTS: self.events}[topic]


@dataclass(frozen=True)
class Hold:
    """The subscription that keeps a copy of each dead letter for inspection. It never expires: the default expiry
    drops an unused subscription after 31 days, and every dead letter with it."""

    retention: str = "7d"
    expiration: str = "never"

    @staticmethod
    def name(topics: Topics) -> str:
        return f"{topics.dead_letter}-hold"


HOLD = Hold()
MAX_DELIVERY_ATTEMPTS = 10  # then the message goes to the dead-letter topic and dead_letter records it as failed


@dataclass(frozen=True)
class Delivery:
    """A push subscription's policy. The ack deadline covers a cold start (instance start, model load) plus the
    function's timeout: a delivery still being worked on is not handed to a second instance."""

    ack_deadline_seconds: int
    dead_letter: bool  # capped and sent to the dead-letter topic (never dead_letter's own: there is nowhere further)
    max_delivery_attempts: int = MAX_DELIVERY_ATTEMPTS
    # Backoff between redeliveries, deployed only: the emulator's redeliveries are left immediate, so the tests'
    # crashes and dead letters play out in seconds rather than minutes.
    min_retry_delay_seconds: int = 10
    max_retry_delay_seconds: int = 600


@dataclass(frozen=True)
class Size:
    memory: str
    cpu: int
    concurrency: int  # also functions-framework's THREADS (its default is 4 x CPUs)


BASE_PACKAGES = ("functions-framework", "flask", "numpy", "pillow", "google-cloud-storage", "google-cloud-firestore",
                 "google-cloud-pubsub")
# classify_image without TensorFlow when it runs a LiteRT build. Measured (bench/classify.py, ResNet50): LiteRT int8
# with two 1-thread interpreters 0.4 s cold start, ~210 MB peak; Keras ~6 s, ~850 MB with batches of 8. Concurrency
# 32 on LiteRT: a delivery waits for its instance's next counting commit before it is acked (bench/counting.py), so
# the interpreters need many deliveries in flight; large decodes are one at a time, so memory stays bounded.
MODEL_PACKAGES = {Runtime.LITERT: ("pillow-heif", "ai-edge-litert"), Runtime.KERAS: ("pillow-heif", "tensorflow-cpu")}
MODEL_SIZES = {Runtime.LITERT: Size("1Gi", 2, 32), Runtime.KERAS: Size("2Gi", 2, 16)}


@dataclass(frozen=True)
class CloudFunction:
    entry_point: str  # the target, in functions/<entry_point>/main.py
    deployed_name: str
    trigger: Trigger
    topic: Topic | None  # the topic that triggers it
    identity: str  # the Identity it runs as
    size: Size
    timeout_seconds: int
    max_instances: int
    delivery: Delivery | None
    service_key: bool  # SERVICE_KEY mounted: it checks requests or signs completion callbacks with the key
    loads_model: bool = False  # the weights and the detector ship with it; --max-instances scales it

    @property
    def signature(self) -> str:
        """functions-framework's --signature-type."""
        return "http" if self.trigger == Trigger.HTTP else "cloudevent"

    @property
    def source(self) -> str:
        return f"functions/{self.entry_point}/main.py"


def _http(function: Function, identity: str, size: Size, timeout: int) -> CloudFunction:
    """An HTTP function of the route table: public only with the key, reached through the gateway."""
    return CloudFunction(function.value, function.value.replace("_", "-"), Trigger.HTTP, None, identity, size,
                         timeout, 10, None, service_key=True)


def functions(runtime: Runtime = Runtime.LITERT, max_instances: int = 20) -> tuple[CloudFunction, ...]:
    """Every function, in the order they are deployed. runtime: classify_image's; max_instances: its scale."""
    return (
        # create_job lists the whole prefix and waits for every publish: long timeout, modest memory.
        _http(Function.CREATE_JOB, "create", Size("512Mi", 1, 20), 540),
        # job_status is a few document reads: small, highly concurrent.
        _http(Function.JOB_STATUS, "status", Size("256Mi", 1, 80), 30),
        CloudFunction("classify_image", "classify-image", Trigger.TOPIC, Topic.FANOUT, "classify", MODEL_SIZES[runtime],
                      120, max_instances, Delivery(DELIVERY_DEADLINE_SECONDS, dead_letter=True), service_key=True,
                      loads_model=True),
        CloudFunction("object_arrived", "object-arrived", Trigger.TOPIC, Topic.UPLOADS, "objects", Size("256Mi", 1, 40),
                      60, 10, Delivery(120, dead_letter=True), service_key=False),
        CloudFunction("dead_letter", "dead-letter", Trigger.TOPIC, Topic.DEAD_LETTER, "deadletter",
                      Size("256Mi", 1, 20), 60, 5, Delivery(120, dead_letter=False), service_key=True),
    )


@dataclass(frozen=True)
class RunService:
    """A Cloud Run service built from an operator's source folder, its code unchanged, with the photo bucket mounted
    as a folder (a Cloud Storage volume: Cloud Storage FUSE)."""

    name: str  # the deployed service's name
    identity: str
    mount_path: str  # where the bucket appears; the working folder BASE/FOLDER/SUB_FOLDER names it
    size: Size
    timeout_seconds: int
    python: str  # the buildpack's GOOGLE_PYTHON_VERSION
    app: str  # the Flask application, for `flask --app`

    @property
    def working_folder(self) -> dict[str, str]:
        """The downloader-uploader joins BASE, FOLDER and SUB_FOLDER (all three required, none empty here)."""
        base, folder, sub_folder = self.mount_path.rsplit("/", 2)
        return {"BASE": base or "/", "FOLDER": folder, "SUB_FOLDER": sub_folder}

    @property
    def entrypoint(self) -> str:
        """Run by the buildpack under bash. all/ is made through the mount first: its download writes into all/ but
        never makes it, and in an empty bucket there is no all/ to write into (gcsfuse makes an `all/` placeholder
        object, which jobs and watch jobs skip). One process: its jobs live in that process's memory."""
        return (f"mkdir -p {self.mount_path}/all && exec python -m flask --app {self.app} run --host 0.0.0.0 "
                "--port $PORT")


# The old system's downloader-uploader (mungujn/downloader-uploader: service.py's Flask app). One instance: its jobs
# are a dict in memory, so a status poll must reach the instance that started the job. CPU stays allocated between
# requests (--no-cpu-throttling in deploy.sh): its downloads and uploads run in threads after the response.
UPLOADER = RunService("downloader-uploader", "uploader", "/mnt/imgclassify/bucket", Size("1Gi", 1, 80), 300,
                      "3.11.x", "service")


def packages(function: CloudFunction, runtime: Runtime) -> tuple[str, ...]:
    """What its requirements.txt pins (from constraints.txt)."""
    return BASE_PACKAGES + (MODEL_PACKAGES[runtime] if function.loads_model else ())


class Scope(StrEnum):
    """What a role is granted on."""

    PROJECT = "project"
    BUCKET = "bucket"  # the photo bucket
    WEIGHTS = "weights"  # the weights' bucket, when it is another one
    TOPIC = "topic"  # target: a Topic
    SECRET = "secret"  # the service key's secret (only deployed with one)
    FUNCTION = "function"  # target: a deployed function's name (the invoker role)
    SUBSCRIPTION = "subscription"  # target: the deployed function whose trigger subscription it is


@dataclass(frozen=True)
class Grant:
    role: str
    scope: Scope
    target: str = ""
    with_key: bool = False  # only when deployed with a service key (the secret, the gateway)


@dataclass(frozen=True)
class Identity:
    """A service account imgclassify-<name>@PROJECT.iam.gserviceaccount.com, or (agent) one Google manages."""

    name: str
    purpose: str
    grants: tuple[Grant, ...]
    agent: bool = False  # Google's service agent: granted roles, never created or deleted here
    uploader: bool = False  # created only with the downloader-uploader (deploy.sh --uploader); deleted always


def _runs(datastore: str, *more: Grant, key: bool = True) -> tuple[Grant, ...]:
    """A function's identity: Firestore, its logs, what else it touches, the key's secret when it reads it."""
    secret = (Grant("roles/secretmanager.secretAccessor", Scope.SECRET, with_key=True),) if key else ()
    return (Grant(datastore, Scope.PROJECT), Grant("roles/logging.logWriter", Scope.PROJECT), *more, *secret)


PUBLISHER = "roles/pubsub.publisher"
INVOKER = "roles/run.invoker"


def identities() -> tuple[Identity, ...]:
    """Who runs, builds, triggers and fronts the functions, each with only what it needs; then Google's agents."""
    event = [f.deployed_name for f in functions() if f.trigger == Trigger.TOPIC]
    http = [f.deployed_name for f in functions() if f.trigger == Trigger.HTTP]
    capped = [f.deployed_name for f in functions() if f.delivery and f.delivery.dead_letter]
    return (
        Identity("create", "runs create-job: lists, publishes, corrects and undoes", _runs(
            "roles/datastore.user", Grant("roles/storage.objectAdmin", Scope.BUCKET),  # corrections copy, undo removes
            Grant(PUBLISHER, Scope.TOPIC, Topic.FANOUT), Grant(PUBLISHER, Scope.TOPIC, Topic.EVENTS))),
        Identity("status", "runs job-status: reads jobs, previews", _runs(  # it can change nothing
            "roles/datastore.viewer", Grant("roles/storage.objectViewer", Scope.BUCKET))),
        Identity("classify", "runs classify-image: reads photos, writes copies and results", _runs(
            "roles/datastore.user", Grant("roles/storage.objectAdmin", Scope.BUCKET),
            Grant("roles/storage.objectViewer", Scope.WEIGHTS), Grant(PUBLISHER, Scope.TOPIC, Topic.EVENTS))),
        Identity("objects", "runs object-arrived: adds uploads to watch jobs", _runs(
            "roles/datastore.user", Grant(PUBLISHER, Scope.TOPIC, Topic.FANOUT), key=False)),
        # Reads the bucket: a dead letter counts only when the object it names exists.
        Identity("deadletter", "runs dead-letter: records what Pub/Sub gave up on", _runs(
            "roles/datastore.user", Grant("roles/storage.objectViewer", Scope.BUCKET),
            Grant(PUBLISHER, Scope.TOPIC, Topic.EVENTS))),
        # Without the invoker role every push is refused, and dead-lettered.
        Identity("trigger", "delivers Pub/Sub messages to the event-triggered functions",
                 tuple(Grant(INVOKER, Scope.FUNCTION, name) for name in event)),
        # What Google lists for a custom build service account, instead of the broad Cloud Build builder role.
        Identity("build", "builds the functions", tuple(Grant(role, Scope.PROJECT) for role in (
            "roles/logging.logWriter", "roles/artifactregistry.writer", "roles/storage.objectViewer"))),
        Identity("gateway", "forwards the one base URL to create-job and job-status",
                 tuple(Grant(INVOKER, Scope.FUNCTION, name, with_key=True) for name in http)),
        # Reads and writes objects in the photo bucket through its mount, and reads the key: nothing project-wide.
        Identity("uploader", "runs the old system's downloader-uploader on the bucket", (
            Grant("roles/storage.objectUser", Scope.BUCKET),
            Grant("roles/secretmanager.secretAccessor", Scope.SECRET, with_key=True)), uploader=True),
        Identity("storage-agent", "Cloud Storage's service agent: publishes the bucket's notifications",
                 (Grant(PUBLISHER, Scope.TOPIC, Topic.UPLOADS),), agent=True),
        Identity("pubsub-agent", "Pub/Sub's service agent: moves what it gives up on to the dead-letter topic",
                 (Grant(PUBLISHER, Scope.TOPIC, Topic.DEAD_LETTER),
                  *(Grant("roles/pubsub.subscriber", Scope.SUBSCRIPTION, name) for name in capped)), agent=True),
    )


def accounts(with_uploader: bool = True) -> tuple[Identity, ...]:
    """The service accounts a deployment creates (and a teardown deletes: all of them, uploader included)."""
    return tuple(identity for identity in identities()
                 if not identity.agent and (with_uploader or not identity.uploader))


def grants(with_key: bool, weights_elsewhere: bool, with_uploader: bool = True) -> Iterator[tuple[Identity, Grant]]:
    """Every role a deployment grants, for its options."""
    for identity in identities():
        if identity.uploader and not with_uploader:
            continue
        for grant in identity.grants:
            if (grant.with_key and not with_key) or (grant.scope == Scope.WEIGHTS and not weights_elsewhere):
                continue
            yield identity, grant


def _row(kind: str, *fields: object) -> str:
    """One record for a shell's `read -r`: its kind, then fields without spaces (but the last), "-" for none."""
    return " ".join([kind, *(str(field) if field not in (None, "") else "-" for field in fields)])


def _function_rows(runtime: Runtime, max_instances: int) -> list[str]:
    return [_row("function", f.deployed_name, f.entry_point, f.trigger, f.topic, f.identity, f.size.memory,
                 f.size.cpu, f.size.concurrency, f.timeout_seconds, f.max_instances, "key" if f.service_key else "",
                 "model" if f.loads_model else "") for f in functions(runtime, max_instances)]


def _subscription_rows() -> list[str]:
    return [_row("subscription", f.deployed_name, d.ack_deadline_seconds, "dead-letter" if d.dead_letter else "",
                 d.max_delivery_attempts if d.dead_letter else "", d.min_retry_delay_seconds,
                 d.max_retry_delay_seconds) for f in functions() if (d := f.delivery) is not None]


def _topic_rows(topics: Topics) -> list[str]:
    return [_row("topic", topic, topics.name(topic)) for topic in Topic] + [
        _row("hold", HOLD.name(topics), HOLD.retention, HOLD.expiration)]


def _service_row(service: RunService) -> str:
    folder = service.working_folder
    return _row("service", service.name, service.identity, service.mount_path, folder["BASE"], folder["FOLDER"],
                folder["SUB_FOLDER"], service.size.memory, service.size.cpu, service.size.concurrency,
                service.timeout_seconds, service.python, service.entrypoint)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m common.infrastructure", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", choices=choices(Runtime), default=Runtime.LITERT.value,
                        help="classify_image's: its size and packages")
    parser.add_argument("--max-instances", type=int, default=20, help="classify_image's")
    parser.add_argument("--topic", required=True, help="the fan-out topic's name")
    parser.add_argument("--events-topic", required=True)
    parser.add_argument("--uploads-topic", default="", help="default: <topic>-uploads")
    parser.add_argument("--with-key", action="store_true", help="deployed with a service key (its secret, the gateway)")
    parser.add_argument("--weights-elsewhere", action="store_true", help="the weights are in another bucket")
    parser.add_argument("--with-uploader", action="store_true", help="the downloader-uploader, its identity and roles")
    return parser


def rows(argv: Sequence[str]) -> list[str]:
    """What `python -m common.infrastructure ARGV` prints: every record, one a line, its kind first."""
    args = _parser().parse_args(argv)
    runtime = Runtime(args.runtime)
    return [*_function_rows(runtime, args.max_instances),
            *(_row("package", f.entry_point, *packages(f, runtime)) for f in functions(runtime)),
            *_subscription_rows(),
            *_topic_rows(Topics.named(args.topic, args.events_topic, args.uploads_topic)),
            *([_service_row(UPLOADER)] if args.with_uploader else []),
            *(_row("identity", identity.name, identity.purpose) for identity in accounts(args.with_uploader)),
            *(_row("grant", identity.name, "agent" if identity.agent else "account", grant.scope, grant.target,
                   grant.role) for identity, grant in grants(args.with_key, args.weights_elsewhere,
                                                             args.with_uploader))]


if __name__ == "__main__":
    print("\n".join(rows(sys.argv[1:])))
