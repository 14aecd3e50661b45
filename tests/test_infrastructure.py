"""The infrastructure is declared once (common/infrastructure.py) and the emulated stack is the deployed one: the
ack deadlines and dead-letter policies deploy.sh sets (read from its dry run) equal those imgclassify/local_stack.py
asks the Pub/Sub emulator for (read from its requests, and from the running emulator)."""
from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from common.domain.jobs import DELIVERY_DEADLINE_SECONDS
from common.infrastructure import UPLOADER, Scope, Topic, Trigger, accounts, functions, grants, identities, rows
from common.routes import Function
from imgclassify.deploy_json import accepted_build, label, notification_ids
from imgclassify.local_stack import LocalStack
from tests.test_deploy import fake_gcloud  # noqa: F401  (the recording stand-in for gcloud)

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Policy:
    """A push subscription's deadline and dead-letter policy, as one stack or the other sets it."""

    ack_deadline: int
    dead_letter_topic: str | None
    max_delivery_attempts: int | None


def deployed_policies(stdout: str) -> dict[str, Policy]:
    """Per deployed function, what deploy.sh's dry run sets on its trigger's subscription."""
    policies = {}
    for line in stdout.splitlines():
        if not line.startswith("+ gcloud pubsub subscriptions update "):
            continue
        words = shlex.split(line[2:].split("   # ")[0])
        flags = dict(word[2:].split("=", 1) for word in words if word.startswith("--") and "=" in word)
        function = words[4].removeprefix("EVENTARC_SUBSCRIPTION_OF_")
        attempts = flags.get("max-delivery-attempts")
        policies[function] = Policy(int(flags["ack-deadline"]), flags.get("dead-letter-topic"),
                                    int(attempts) if attempts else None)
    return policies


@dataclass
class EmulatorsSeen:
    """What LocalStack reads of the emulators to name its subscriptions (nothing is started)."""

    project: str = "local-project"
    object_events_topic: str = "object-events"
    env: dict[str, str] = field(default_factory=dict)


def emulated_stack(emulators: object) -> LocalStack:
    """A stack with a port for each function, as if started (the push endpoints name them)."""
    ports = {function.entry_point: 40000 + n for n, function in enumerate(functions())}
    return LocalStack(emulators, function_ports=ports)  # type: ignore[arg-type]


def emulated_policies(stack: LocalStack, subscriptions: list[dict[str, object]]) -> dict[str, Policy]:
    """Per deployed function (found by its push endpoint), the policy of the subscription pushing to it."""
    by_port = {str(port): name for name, port in stack.function_ports.items()}
    deployed = {function.entry_point: function.deployed_name for function in functions()}
    policies = {}
    for subscription in subscriptions:
        endpoint = subscription["push_config"]["push_endpoint"]  # type: ignore[index]
        port = re.search(r":(\d+)/$", endpoint).group(1)  # type: ignore[union-attr, arg-type]
        dead_letter = subscription.get("dead_letter_policy") or {}
        topic = dead_letter.get("dead_letter_topic")  # type: ignore[union-attr]
        policies[deployed[by_port[port]]] = Policy(
            int(subscription["ack_deadline_seconds"]),  # type: ignore[call-overload]
            topic.rsplit("/", 1)[-1] if topic else None, dead_letter.get("max_delivery_attempts") or None)  # type: ignore
    return policies


def test_the_emulated_deadlines_and_dead_letter_policies_are_the_deployed_ones(fake_gcloud):  # noqa: F811
    result, calls = fake_gcloud("--dry-run", "--project", "proj", "--weights", fake_gcloud.weights, "--runtime",
                                "keras")
    assert result.returncode == 0 and calls == [], result.stderr
    deployed = deployed_policies(result.stdout)
    stack = emulated_stack(EmulatorsSeen())
    emulated = emulated_policies(stack, stack.subscription_requests())

    assert emulated == deployed
    assert deployed == {
        "classify-image": Policy(DELIVERY_DEADLINE_SECONDS, "classify-image-dead-letter", 10),
        "object-arrived": Policy(120, "classify-image-dead-letter", 10),
        "dead-letter": Policy(120, None, None)}  # nowhere further to send a dead letter


def test_a_tests_shorter_deadlines_replace_the_declared_ones_everywhere():
    stack = emulated_stack(EmulatorsSeen())
    stack.ack_deadline, stack.max_delivery_attempts = 10, 5
    policies = emulated_policies(stack, stack.subscription_requests())
    assert {policy.ack_deadline for policy in policies.values()} == {10}
    assert {policy.max_delivery_attempts for policy in policies.values()} == {5, None}


@pytest.mark.emulator
def test_the_running_emulator_holds_the_declared_policies(emulators, fake_gcloud):  # noqa: F811
    """The subscriptions as the Pub/Sub emulator keeps them, read back through its API."""
    from google.cloud import pubsub_v1

    from imgclassify.emulation import environ

    stack = emulated_stack(emulators)
    stack.subscription, stack.topic = "infrastructure-push", "infrastructure-classify"
    stack.recreate_messaging()
    try:
        with environ(emulators.env):
            subscriber = pubsub_v1.SubscriberClient()
            held = [pubsub_v1.types.Subscription.to_dict(subscriber.get_subscription(subscription=request["name"]))
                    for request in stack.subscription_requests()]
            subscriber.close()
    finally:
        stack._delete_push_subscriptions()
    result, _ = fake_gcloud("--dry-run", "--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                            "--topic", "infrastructure-classify")
    assert emulated_policies(stack, held) == deployed_policies(result.stdout)


def test_classify_images_deadline_is_the_one_retry_waits_for():
    [classify] = [function for function in functions() if function.deployed_name == "classify-image"]
    assert classify.delivery is not None and classify.delivery.ack_deadline_seconds == DELIVERY_DEADLINE_SECONDS


def test_every_deadline_covers_its_functions_timeout():
    for function in functions():
        if function.delivery:
            assert function.delivery.ack_deadline_seconds > function.timeout_seconds, function.deployed_name


def test_the_http_functions_are_the_route_tables_and_each_function_is_in_its_source():
    http = {function.entry_point for function in functions() if function.trigger == Trigger.HTTP}
    assert http == {member.value for member in Function if member != Function.NONE}
    for function in functions():
        tree = ast.parse((REPO / function.source).read_text())
        assert function.entry_point in {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    from imgclassify.gateway_config import DEPLOYED_NAMES  # the gateway forwards to the same names

    assert {member.value: name for member, name in DEPLOYED_NAMES.items()} == {
        function.entry_point: function.deployed_name for function in functions() if function.trigger == Trigger.HTTP}


def test_each_function_runs_as_a_declared_identity_and_each_topic_has_its_consumer():
    names = {identity.name for identity in accounts()}
    assert {function.identity for function in functions()} <= names
    consumed = {function.topic for function in functions() if function.trigger == Trigger.TOPIC}
    assert consumed == {Topic.FANOUT, Topic.UPLOADS, Topic.DEAD_LETTER}  # EVENTS: the operator's own subscribers


def test_dead_letter_reads_the_bucket_and_job_status_changes_nothing():
    held = {(identity.name, grant.scope, grant.role) for identity, grant in grants(True, True)}
    assert ("deadletter", Scope.BUCKET, "roles/storage.objectViewer") in held
    status = {(scope, role) for name, scope, role in held if name == "status"}
    assert all(role.endswith(("viewer", "Viewer", "logWriter", "secretAccessor")) for _, role in status)


def test_the_deployment_docs_name_the_identities_it_really_creates():
    docs = (REPO / "docs/deployment.md").read_text()
    created = {f"imgclassify-{identity.name}" for identity in accounts()}
    named = set(re.findall(r"`(imgclassify-[a-z]+)`", docs))
    assert named == created and len(created) == 9  # the downloader-uploader's only with --uploader
    agents = [identity for identity in identities() if identity.agent]
    assert agents and not created & {f"imgclassify-{agent.name}" for agent in agents}


def test_deploy_json_reads_what_gcloud_and_the_build_print():
    listed = [{"Bucket URL": "gs://b/", "Notification Configuration": {
        "id": "7", "topic": "//pubsub.googleapis.com/projects/p/topics/classify-image-uploads"}},
              {"id": "8", "topic": "//pubsub.googleapis.com/projects/p/topics/other-classify-image-uploads"}]
    assert notification_ids(listed, "classify-image-uploads") == ["7"] and notification_ids(None, "t") == []
    assert label({"labels": {"imgclassify-created": "true"}}, "imgclassify-created") == "true"
    assert label({"name": "b"}, "imgclassify-created") == "" and label(None, "x") == ""
    guard = {"top1_agreement": 0.99, "decision_agreement": 1.0, "images": 150}
    report = {"int8": {"accepted": False, "path": "a.tflite", "guard": guard},
              "int8-mixed": {"accepted": True, "path": "b.tflite", "guard": guard}}
    path, said = accepted_build(report) or ("", "")
    assert path == "b.tflite" and said.startswith("int8-mixed passed the accuracy guard")
    assert accepted_build({"fp32": {"accepted": False}}) is None


def test_the_downloader_uploaders_identity_touches_the_bucket_and_the_key_only_and_only_when_asked_for():
    """Issue 32: objects on the photo bucket (read and write through its mount) and the key's secret; nothing
    project-wide; not created at all without --uploader (a teardown deletes it always)."""
    held = {(grant.scope, grant.role) for identity, grant in grants(True, True) if identity.name == UPLOADER.identity}
    assert held == {(Scope.BUCKET, "roles/storage.objectUser"), (Scope.SECRET, "roles/secretmanager.secretAccessor")}
    assert UPLOADER.identity not in {identity.name for identity in accounts(with_uploader=False)}
    assert not [identity for identity, _ in grants(True, True, with_uploader=False) if identity.uploader]
    base = ["--topic", "t", "--events-topic", "e", "--with-key"]
    without, with_uploader = rows(base), rows([*base, "--with-uploader"])
    assert not [row for row in without if row.startswith("service ") or " uploader " in f" {row} "]
    [service] = [row for row in with_uploader if row.startswith("service ")]
    name, identity, mount, base_dir, folder, sub_folder = service.split()[1:7]
    assert (name, identity, mount) == (UPLOADER.name, UPLOADER.identity, UPLOADER.mount_path)
    assert "/".join([base_dir.rstrip("/"), folder, sub_folder]) == mount  # the downloader-uploader's working folder
    assert service.endswith(UPLOADER.entrypoint) and "," not in UPLOADER.entrypoint  # one --set-build-env-vars value
