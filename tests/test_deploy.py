"""deploy.sh against a stand-in `gcloud` on PATH that records every call (no cloud is touched)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

FAKE_GCLOUD = r"""#!/usr/bin/env bash
printf '%s\x1f' "$@" >> "$GCLOUD_LOG"; printf '\n' >> "$GCLOUD_LOG"
case "$*" in
  "storage service-agent"*) echo service-424242@gs-project-accounts.iam.gserviceaccount.com; exit 0 ;;
  "run services describe"*"status.url"*) echo "https://$4-abc.a.run.app"; exit 0 ;;
  "run services describe"*--format=json*)  # gcloud prints the v1 resource: the labels are in its metadata
    [[ ${FAKE_GCLOUD_EXISTING:-0} == 1 ]] || exit 1
    echo "{\"metadata\": {\"name\": \"$4\", \"labels\": {${FAKE_RUN_LABELS-\"imgclassify-created\": \"true\"}}}}"; exit 0 ;;
  "storage buckets notifications list"*)
    # What gcloud 528 prints (surface/storage/buckets/notifications/list.py): one resource per configuration,
    # {"Bucket URL": ..., "Notification Configuration": {... "topic": ...}}; a top-level key it lacks is empty.
    [[ ${FAKE_GCLOUD_EXISTING:-0} == 1 ]] || { [[ "$*" == *--format=json* ]] && echo "[]"; exit 0; }
    case "$*" in
      *--format=json*) printf '%s\n' '[{"Bucket URL": "gs://proj-images/", "Notification Configuration": {"etag": "1",' \
          ' "event_types": ["OBJECT_FINALIZE"], "id": "1", "kind": "storage#notification", "object_name_prefix": "all/",' \
          ' "payload_format": "JSON_API_V1", "topic": "//pubsub.googleapis.com/projects/proj/topics/classify-image-uploads"}}]' ;;
      *"--format=value("*) echo ;;
      *) printf 'Bucket URL: gs://proj-images/\nNotification Configuration:\n  topic: //pubsub.googleapis.com/projects/proj/topics/classify-image-uploads\n' ;;
    esac
    exit 0 ;;
  "storage ls gs://"*) for i in $(seq 1 "${FAKE_PHOTOS:-0}"); do echo "gs://b/all/p$i.jpg"; done; exit 0 ;;
  "storage cp -I "*) while read -r url; do echo photo > "$4/$(basename "$url")"; done; exit 0 ;;
  "functions deploy ${FAKE_FAILING_FUNCTION:-classify-image}"*)
    failures=$(cat "$GCLOUD_LOG.failures" 2>/dev/null || echo 0)
    if ((failures < ${FAKE_DEPLOY_FAILURES:-0})); then echo $((failures + 1)) > "$GCLOUD_LOG.failures"; exit 1; fi
    exit 0 ;;
  "auth list"*) [[ ${FAKE_NO_ACCOUNT:-0} == 1 ]] || echo deployer@example.com; exit 0 ;;
  "billing projects describe"*) [[ ${FAKE_NO_BILLING:-0} == 1 ]] && echo False || echo True; exit 0 ;;
  "projects get-iam-policy"*) echo "${FAKE_ROLES:-roles/owner}" | tr ' ' '\n'; exit 0 ;;
  "projects describe "*"value(projectId)"*) [[ ${FAKE_NO_PROJECT:-0} == 1 ]] && exit 1; echo proj; exit 0 ;;
  *"gateways describe"*"defaultHostname"*) echo imgclassify-abc.uc.gateway.dev; exit 0 ;;
  *"api-configs list"*) echo projects/proj/locations/global/apis/imgclassify/configs/imgclassify-0123; exit 0 ;;
  *" describe "*"--format=value(projectNumber)"*) echo 424242; exit 0 ;;
  "storage buckets describe "*"--format=json"*)  # the labels record what deploy.sh created
    [[ ${FAKE_GCLOUD_EXISTING:-0} == 1 ]] || exit 1
    echo "{\"name\": \"proj-images\", \"labels\": {${FAKE_BUCKET_LABELS:-}}}"; exit 0 ;;
  *"functions describe "*"eventTrigger.trigger"*) echo "projects/p/locations/r/triggers/$3-trigger"; exit 0 ;;
  *"eventarc triggers describe"*) echo "projects/p/subscriptions/eventarc-${4%-trigger}-sub"; exit 0 ;;
  *"serviceConfig.uri"*) echo "https://$3-abc.a.run.app"; exit 0 ;;
  *" describe "*) [[ ${FAKE_GCLOUD_EXISTING:-0} == 1 ]]; exit $? ;;
  "config get-value project") echo configured-project; exit 0 ;;
esac
exit 0
"""


@pytest.fixture
def fake_gcloud(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "gcloud"
    script.write_text(FAKE_GCLOUD)
    script.chmod(0o755)
    log = tmp_path / "gcloud.log"
    log.touch()
    weights = tmp_path / "model.weights.h5"
    weights.write_bytes(b"weights")
    detector = tmp_path / "detector.tflite"
    detector.write_bytes(b"TFL3detector")  # a prebuilt detector: the stand-in never runs it
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GCLOUD_LOG": str(log),
           "DETECTOR_FILE": str(detector)}
    env.pop("GOOGLE_CLOUD_PROJECT", None)

    def deploy(*args: str, existing: bool = False, stdin: int = subprocess.DEVNULL,
               **extra_env: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
        log.write_text("")
        Path(f"{log}.failures").unlink(missing_ok=True)
        # Standard input is no terminal unless a test gives one: deploy.sh asks before deleting data on a terminal.
        result = subprocess.run(["bash", str(REPO / "deploy.sh"), *args], capture_output=True, text=True,
                                env={**env, "FAKE_GCLOUD_EXISTING": "1" if existing else "0", **extra_env},
                                stdin=stdin, timeout=120)
        calls = [line.split("\x1f")[:-1] for line in log.read_text().splitlines()]
        return result, calls

    deploy.weights = str(weights)  # type: ignore[attr-defined]
    return deploy


def _find(calls, *prefix):
    return [c for c in calls if c[:len(prefix)] == list(prefix)]


def _flag(call, name):
    return [a.split("=", 1)[1] for a in call if a.startswith(name + "=")] or \
        [call[i + 1] for i, a in enumerate(call[:-1]) if a == name]


def test_first_deploy_creates_everything_and_deploys_five_functions(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras")

    assert result.returncode == 0, result.stderr
    enabled = _find(calls, "services", "enable")[0]
    for api in ("cloudfunctions", "run", "eventarc", "pubsub", "firestore", "storage", "cloudbuild", "logging",
                "cloudresourcemanager", "iam"):
        assert f"{api}.googleapis.com" in enabled
    # Every command names the project (`projects …` commands take it as their argument).
    assert all("--project" in call or call[:1] == ["projects"] and call[2] == "proj" or call[:2] == ["auth", "list"]
               or call[:3] == ["billing", "projects", "describe"] and call[3] == "proj"
               for call in calls)  # (which account is logged in is no project's)
    assert _find(calls, "storage", "buckets", "create", "gs://proj-images")
    # what it created is recorded on the bucket: --delete-data deletes only that
    [labels] = _find(calls, "storage", "buckets", "update", "gs://proj-images")
    assert _flag(labels, "--update-labels") == ["imgclassify-created=true,imgclassify-created-database=true"]
    assert {c[3] for c in _find(calls, "pubsub", "topics", "create")} == {
        "classify-image", "classify-image-dead-letter", "classify-image-uploads", "job-events"}
    [upload] = _find(calls, "storage", "cp")
    assert upload[2] == fake_gcloud.weights and upload[3].startswith("gs://proj-images/models/")

    deploys = {c[2]: c for c in _find(calls, "functions", "deploy")}
    assert set(deploys) == {"create-job", "job-status", "classify-image", "object-arrived", "dead-letter"}
    for name, call in deploys.items():
        assert "--gen2" in call and _flag(call, "--runtime") == ["python311"]
        assert _flag(call, "--entry-point") == [name.replace("-", "_")]
        source = Path(_flag(call, "--source")[0])
        assert (source / "main.py").exists() and (source / "common" / "bootstrap" / "__init__.py").exists()
        # common/ ships whole and the local tooling not at all
        assert (source / "common/usecases/create_job.py").exists() and not (source / "imgclassify").exists()
    for name in ("create-job", "job-status"):
        assert "--trigger-http" in deploys[name] and "--no-allow-unauthenticated" in deploys[name]
        assert "--allow-unauthenticated" not in deploys[name]
    classify = deploys["classify-image"]
    assert _flag(classify, "--trigger-topic") == ["classify-image"] and "--retry" in classify
    env = dict(kv.split("=", 1) for kv in _flag(classify, "--set-env-vars")[0].split(","))
    assert env["MODEL"] == "resnet50" and env["MODEL_WEIGHTS"] == upload[3]
    requirements = (Path(_flag(classify, "--source")[0]) / "requirements.txt").read_text()
    assert "tensorflow-cpu==" in requirements and "ai-edge-litert" not in requirements

    updates = {c[3]: c for c in _find(calls, "pubsub", "subscriptions", "update")}
    # classify-image's and object-arrived's deliveries are capped and dead-lettered; dead-letter's are not (a loop)
    capped = {name for name, call in updates.items() if _flag(call, "--dead-letter-topic")}
    assert capped == {"projects/p/subscriptions/eventarc-classify-image-sub",
                      "projects/p/subscriptions/eventarc-object-arrived-sub"}
    assert set(updates) == capped | {"projects/p/subscriptions/eventarc-dead-letter-sub"}
    for name in capped:
        assert _flag(updates[name], "--dead-letter-topic") == ["classify-image-dead-letter"]
        assert _flag(updates[name], "--max-delivery-attempts") == ["10"]
    # a cold start plus the 120 s function timeout
    assert int(_flag(updates["projects/p/subscriptions/eventarc-classify-image-sub"], "--ack-deadline")[0]) >= 300
    dead_letter = deploys["dead-letter"]
    assert _flag(dead_letter, "--trigger-topic") == ["classify-image-dead-letter"] and "--retry" in dead_letter
    for name in ("classify-image", "object-arrived", "dead-letter"):  # reached by Eventarc only
        assert _flag(deploys[name], "--ingress-settings") == ["internal-only"]
    [hold] = _find(calls, "pubsub", "subscriptions", "create")
    assert _flag(hold, "--expiration-period") == ["never"]  # the default 31-day expiry drops dead letters
    for call in deploys.values():
        env = dict(kv.split("=", 1) for kv in _flag(call, "--set-env-vars")[0].split(","))
        assert env["THREADS"] == _flag(call, "--concurrency")[0]  # functions-framework's default is 4 x CPUs
    assert "create-job: https://create-job-abc.a.run.app" in result.stdout


TRIGGER_SA = "imgclassify-trigger@proj.iam.gserviceaccount.com"
BUILD_SA = "imgclassify-build@proj.iam.gserviceaccount.com"
GATEWAY_SA = "imgclassify-gateway@proj.iam.gserviceaccount.com"


def _bindings(calls) -> set[tuple[str, str, str]]:
    """(resource, member, role) of every IAM binding deploy.sh added."""
    found = set()
    for call in calls:
        if "add-iam-policy-binding" in call or "add-invoker-policy-binding" in call:
            at = call.index("add-iam-policy-binding" if "add-iam-policy-binding" in call else
                            "add-invoker-policy-binding")
            role = (_flag(call, "--role") or ["roles/run.invoker"])[0]
            found.add((f"{call[0]} {call[at + 1]}", _flag(call, "--member")[0], role))
    return found


def test_each_function_runs_as_its_own_identity_with_least_privilege(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                "--service-key-secret", "old-clients-key")

    assert result.returncode == 0, result.stderr
    created = {c[3] for c in _find(calls, "iam", "service-accounts", "create")}
    assert created == {f"imgclassify-{n}" for n in ("create", "status", "classify", "objects", "deadletter",
                                                     "trigger", "build", "gateway")}
    sa = {n: f"serviceAccount:imgclassify-{n}@proj.iam.gserviceaccount.com" for n in
          ("create", "status", "classify", "objects", "deadletter")}
    bindings = _bindings(calls)
    assert bindings >= {
        ("storage gs://proj-images", sa["create"], "roles/storage.objectAdmin"),
        ("storage gs://proj-images", sa["classify"], "roles/storage.objectAdmin"),
        ("storage gs://proj-images", sa["status"], "roles/storage.objectViewer"),
        ("storage gs://proj-images", sa["deadletter"], "roles/storage.objectViewer"),  # checks the object exists
        ("projects proj", sa["status"], "roles/datastore.viewer"),
        ("projects proj", sa["classify"], "roles/datastore.user"),
        ("pubsub classify-image", sa["create"], "roles/pubsub.publisher"),
        ("pubsub classify-image", sa["objects"], "roles/pubsub.publisher"),
        ("pubsub job-events", sa["classify"], "roles/pubsub.publisher"),
        ("pubsub job-events", sa["deadletter"], "roles/pubsub.publisher"),
        ("secrets old-clients-key", sa["classify"], "roles/secretmanager.secretAccessor"),
        ("secrets old-clients-key", sa["status"], "roles/secretmanager.secretAccessor"),
        ("projects proj", f"serviceAccount:{BUILD_SA}", "roles/artifactregistry.writer"),
        ("projects proj", f"serviceAccount:{BUILD_SA}", "roles/logging.logWriter"),
        ("functions classify-image", f"serviceAccount:{TRIGGER_SA}", "roles/run.invoker"),
        ("functions object-arrived", f"serviceAccount:{TRIGGER_SA}", "roles/run.invoker"),
        ("functions dead-letter", f"serviceAccount:{TRIGGER_SA}", "roles/run.invoker"),
        ("functions create-job", f"serviceAccount:{GATEWAY_SA}", "roles/run.invoker"),
        ("functions job-status", f"serviceAccount:{GATEWAY_SA}", "roles/run.invoker"),
        ("pubsub classify-image-uploads",
         "serviceAccount:service-424242@gs-project-accounts.iam.gserviceaccount.com", "roles/pubsub.publisher"),
    }
    # job-status can change nothing: read-only on the bucket and on Firestore, no topic.
    assert {(r, role) for r, m, role in bindings if m == sa["status"]} == {
        ("storage gs://proj-images", "roles/storage.objectViewer"), ("projects proj", "roles/datastore.viewer"),
        ("projects proj", "roles/logging.logWriter"), ("secrets old-clients-key", "roles/secretmanager.secretAccessor")}
    # Nothing broader: no Editor, Owner or the Cloud Build builder role.
    assert not [b for b in bindings if b[2] in ("roles/editor", "roles/owner", "roles/cloudbuild.builds.builder")]
    own = {"create-job": "create", "job-status": "status", "classify-image": "classify",
           "object-arrived": "objects", "dead-letter": "deadletter"}
    for call in _find(calls, "functions", "deploy"):
        assert _flag(call, "--service-account") == [sa[own[call[2]]].removeprefix("serviceAccount:")]
        assert _flag(call, "--build-service-account") == [f"projects/proj/serviceAccounts/{BUILD_SA}"]
    assert _flag(_find(calls, "functions", "deploy", "classify-image")[0], "--trigger-service-account") == [
        TRIGGER_SA]
    assert "secretmanager.googleapis.com" in _find(calls, "services", "enable")[0]


def test_uploads_under_all_notify_the_uploads_topic_once(fake_gcloud):
    _, first = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras")
    _, second = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                            existing=True)
    [notification] = _find(first, "storage", "buckets", "notifications", "create")
    assert notification[4] == "gs://proj-images" and _flag(notification, "--topic") == ["classify-image-uploads"]
    assert _flag(notification, "--event-types") == ["OBJECT_FINALIZE"] and _flag(notification, "--object-prefix") \
        == ["all/"]
    assert _find(second, "storage", "buckets", "notifications", "create") == []
    arrived = _find(first, "functions", "deploy", "object-arrived")[0]
    assert _flag(arrived, "--trigger-topic") == ["classify-image-uploads"] and "--retry" in arrived


def test_the_first_event_triggered_deploy_is_retried_while_eventarc_permissions_propagate(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                FAKE_DEPLOY_FAILURES="2", RETRY_SECONDS="0")

    assert result.returncode == 0, result.stderr
    assert len(_find(calls, "functions", "deploy", "classify-image")) == 3
    assert "retrying" in result.stdout
    gave_up, _ = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                             FAKE_DEPLOY_FAILURES="9", RETRY_SECONDS="0")
    assert gave_up.returncode != 0 and "did not deploy after 5 attempts" in gave_up.stderr


def test_the_default_deploy_fetches_the_imagenet_weights_and_ships_a_guarded_int8_build(fake_gcloud):
    result, calls = fake_gcloud("--dry-run", "--project", "proj")

    assert result.returncode == 0, result.stderr
    assert calls == []
    assert "-m imgclassify.weights --model resnet50" in result.stdout
    assert "gcloud storage ls gs://proj-images/all/\\*\\* --project proj" in result.stdout  # printed as typed
    build = next(line for line in result.stdout.splitlines() if "tools/build_tflite.py" in line)
    assert "--kinds int8 int8-mixed fp32" in build
    assert "MODEL_RUNTIME=litert" in result.stdout and "int8.tflite" in result.stdout
    requirements = (REPO / "build/deploy/classify_image/requirements.txt").read_text()
    assert "ai-edge-litert==" in requirements and "tensorflow" not in requirements


def test_with_few_photos_only_fp32_is_built_and_with_none_the_keras_runtime_is_deployed_and_said(fake_gcloud,
                                                                                               tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    for i in range(10):
        (few / f"{i}.jpg").write_bytes(b"photo")
    result, _ = fake_gcloud("--dry-run", "--project", "proj", "--weights", fake_gcloud.weights, "--calibration",
                            str(few))
    assert result.returncode == 0, result.stderr
    assert "too few to verify an int8 build" in result.stdout and "--kinds fp32" in result.stdout

    empty, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, FAKE_PHOTOS="0")
    assert empty.returncode == 0, empty.stderr
    assert "no photos in gs://proj-images/all/" in empty.stdout and _find(calls, "storage", "ls")
    requirements = (Path(_flag(_find(calls, "functions", "deploy", "classify-image")[0], "--source")[0])
                    / "requirements.txt").read_text()
    assert "tensorflow-cpu==" in requirements


def test_second_deploy_creates_nothing(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                existing=True)

    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if "create" in c[:4] or c[:2] == ["storage", "cp"]]
    assert len(_find(calls, "functions", "deploy")) == 5


def test_litert_weights_ship_without_tensorflow(fake_gcloud, tmp_path):
    tflite = tmp_path / "resnet50.int8.tflite"
    tflite.write_bytes(b"tflite")
    result, calls = fake_gcloud("--project", "proj", "--weights", str(tflite))
    assert result.returncode == 0, result.stderr
    classify = _find(calls, "functions", "deploy", "classify-image")[0]
    requirements = (Path(_flag(classify, "--source")[0]) / "requirements.txt").read_text()
    assert "ai-edge-litert==" in requirements and "tensorflow" not in requirements


def test_dry_run_prints_every_command_and_runs_none(fake_gcloud):
    result, calls = fake_gcloud("--dry-run", "--project", "proj", "--weights", fake_gcloud.weights, "--runtime",
                                "keras")
    assert result.returncode == 0, result.stderr
    assert calls == []
    assert result.stdout.count("+ gcloud functions deploy") == 5
    assert "per million images about $" in result.stdout and "idle about $0" in result.stdout
    assert "+ gcloud pubsub subscriptions update" in result.stdout


def test_service_key_is_on_every_function_that_checks_requests_or_signs_callbacks(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                "--service-key-secret", "old-clients-key")
    assert result.returncode == 0, result.stderr
    # create-job and job-status check it; create-job (an empty job), classify-image (the last image) and
    # dead-letter (the last image given up) sign the completion callback with it.
    for name in ("create-job", "job-status", "classify-image", "dead-letter"):
        assert _flag(_find(calls, "functions", "deploy", name)[0], "--set-secrets") == [
            "SERVICE_KEY=old-clients-key:latest"], name
    assert "--set-secrets" not in _find(calls, "functions", "deploy", "object-arrived")[0]  # sends none


def test_public_access_is_opt_in_and_never_without_a_key(fake_gcloud):
    _, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                           "--allow-unauthenticated", "--service-key-secret", "k")
    assert "--allow-unauthenticated" in _find(calls, "functions", "deploy", "create-job")[0]
    refused, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                 "--allow-unauthenticated")
    assert refused.returncode != 0 and "--service-key-secret" in refused.stderr and calls == []


def test_the_first_deploy_after_creating_the_identities_is_retried_while_they_propagate(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                FAKE_DEPLOY_FAILURES="2", FAKE_FAILING_FUNCTION="create-job", RETRY_SECONDS="0")
    assert result.returncode == 0, result.stderr
    created = [i for i, c in enumerate(calls) if c[:3] == ["iam", "service-accounts", "create"]]
    deploys = [i for i, c in enumerate(calls) if c[:3] == ["functions", "deploy", "create-job"]]
    assert len(deploys) == 3 and min(deploys) > max(created) and "retrying" in result.stdout


@pytest.mark.parametrize("args, message", [
    (("--project", "proj", "--runtime", "tpu"), "unknown runtime"),
    (("--project", "proj", "--weights", "/nonexistent.h5"), "weights file not found"),
    (("--project", "proj", "--weights-uri", "gs://b/w.h5", "--model", "vgg"), "unknown model"),
    (("--bogus",), "unknown option"),
])
def test_usage_errors_are_one_line_and_nonzero(fake_gcloud, args, message):
    result, calls = fake_gcloud(*args)
    assert result.returncode != 0 and message in result.stderr
    assert not _find(calls, "functions", "deploy")


def test_help(fake_gcloud):
    result, calls = fake_gcloud("--help")
    assert result.returncode == 0 and "--dry-run" in result.stdout and calls == []


def test_build_litert_deploys_a_tflite_without_tensorflow(fake_gcloud, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(120):
        (photos / f"{i}.jpg").write_bytes(b"photo")
    result, calls = fake_gcloud("--dry-run", "--project", "proj", "--weights", fake_gcloud.weights,
                                "--build-litert", str(photos))
    assert result.returncode == 0, result.stderr
    assert "tools/build_tflite.py" in result.stdout and calls == []
    assert "MODEL_RUNTIME=litert" in result.stdout and ".tflite" in result.stdout
    requirements = (REPO / "build/deploy/classify_image/requirements.txt").read_text()
    assert "ai-edge-litert==" in requirements and "tensorflow" not in requirements


CREATED_BY_DEPLOY = '"imgclassify-created": "true", "imgclassify-created-database": "true"'


def test_delete_removes_what_deploy_created_and_keeps_the_data_unless_asked(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--delete", existing=True)
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if "create" in c[:4] or c[:2] == ["functions", "deploy"]]
    assert {c[2] for c in _find(calls, "functions", "delete")} == {
        "create-job", "job-status", "classify-image", "object-arrived", "dead-letter"}
    assert {c[3] for c in _find(calls, "pubsub", "topics", "delete")} == {
        "classify-image", "classify-image-dead-letter", "classify-image-uploads", "job-events"}
    assert [c[4] for c in _find(calls, "storage", "buckets", "notifications", "delete")] == [
        "gs://proj-images/notificationConfigs/1"]  # the one on the uploads topic, read from --format=json
    assert len({c[3] for c in _find(calls, "iam", "service-accounts", "delete")}) == 9  # the uploader's too
    assert _find(calls, "api-gateway", "gateways", "delete") and _find(calls, "api-gateway", "apis", "delete")
    assert [c[3] for c in _find(calls, "api-gateway", "api-configs", "delete")] == ["imgclassify-0123"]
    assert _find(calls, "projects", "remove-iam-policy-binding")
    assert not _find(calls, "storage", "rm") and not _find(calls, "firestore", "databases", "delete")
    assert "are kept" in result.stdout

    with_data, calls = fake_gcloud("--project", "proj", "--delete-data", "--yes", existing=True,
                                   FAKE_BUCKET_LABELS=CREATED_BY_DEPLOY)
    assert with_data.returncode == 0 and _find(calls, "storage", "rm") and _find(calls, "firestore", "databases",
                                                                                   "delete")
    dry, calls = fake_gcloud("--project", "proj", "--delete", "--dry-run")
    assert dry.returncode == 0 and calls == [] and dry.stdout.count("+ gcloud functions delete") == 5
    assert "nothing was deleted" in dry.stdout


@pytest.mark.parametrize("failure, words", [
    ({"FAKE_NO_ACCOUNT": "1"}, "gcloud auth login"),
    ({"FAKE_NO_PROJECT": "1"}, "does not exist"),
    ({"FAKE_NO_BILLING": "1"}, "billing is not enabled"),
])
def test_the_preflight_stops_early_in_one_line(fake_gcloud, failure, words):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras", **failure)
    assert result.returncode == 1 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not _find(calls, "services", "enable") and not _find(calls, "functions", "deploy")


def test_the_preflight_warns_of_roles_it_cannot_see_and_carries_on(fake_gcloud):
    result, _ = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                            FAKE_ROLES="roles/pubsub.admin roles/storage.admin")
    assert result.returncode == 0 and "WARNING" in result.stdout and "roles/eventarc.admin" in result.stdout


def test_one_base_url_api_gateway_forwards_every_old_path_and_status_url_points_at_it(fake_gcloud):
    """Issue 22: the old clients' one base URL, deployed: an API Gateway config generated from the route table."""
    import yaml

    from common.routes import ROUTES, Function

    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                "--service-key-secret", "k")
    assert result.returncode == 0, result.stderr
    [config] = _find(calls, "api-gateway", "api-configs", "create")
    assert _flag(config, "--backend-auth-service-account") == [GATEWAY_SA]
    spec = yaml.safe_load(Path(_flag(config, "--openapi-spec")[0]).read_text())
    assert spec["swagger"] == "2.0"
    for route in ROUTES:
        if route.function == Function.NONE:
            continue
        operation = spec["paths"][route.template.replace("<id>", "{id}")][route.method.lower()]
        backend = operation["x-google-backend"]
        assert backend["address"] == "https://us-central1-proj.cloudfunctions.net/" + \
            {"create_job": "create-job", "job_status": "job-status"}[route.function]
        assert backend["path_translation"] == "APPEND_PATH_TO_ADDRESS"
    [gateway] = _find(calls, "api-gateway", "gateways", "create")
    assert _flag(gateway, "--api-config") == [config[3]]
    for name in ("create-job", "job-status"):
        env = dict(kv.split("=", 1) for kv in _flag(_find(calls, "functions", "deploy", name)[0],
                                                     "--set-env-vars")[0].split(","))
        assert env["STATUS_URL_BASE"] == "https://imgclassify-abc.uc.gateway.dev"
    assert "base URL (POST /classification-job, GET /classification-job/<id>): " \
           "https://imgclassify-abc.uc.gateway.dev" in result.stdout
    again, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                               "--service-key-secret", "k", existing=True)
    assert again.returncode == 0 and not _find(calls, "api-gateway", "gateways", "create")
    assert not _find(calls, "api-gateway", "api-configs", "create")  # the same config: nothing new


def test_behind_the_gateway_the_callers_key_arrives_as_x_forwarded_authorization(fake_service):
    """The gateway puts its own ID token for the function in Authorization; the caller's key is forwarded."""
    import dataclasses

    from tests.fakes import fake_app, served

    app = fake_app(dataclasses.replace(fake_service.settings, service_key="the-key"))
    client = served(app)
    body = {"classes": ["tabby"]}
    assert client.post("/classification-job", json=body,
                       headers={"Authorization": "Bearer gateway-id-token"}).status_code == 401
    assert client.post("/classification-job", json=body, headers={
        "Authorization": "Bearer gateway-id-token", "X-Forwarded-Authorization": "Bearer the-key"}).status_code == 201


def test_without_a_key_no_public_gateway_is_made_and_status_url_points_at_job_status(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras")
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c[:1] == ["api-gateway"]]
    env = dict(kv.split("=", 1) for kv in _flag(_find(calls, "functions", "deploy", "create-job")[0],
                                                 "--set-env-vars")[0].split(","))
    assert env["STATUS_URL_BASE"] == "https://us-central1-proj.cloudfunctions.net/job-status"


def test_running_it_again_on_a_deployed_project_changes_nothing_and_is_the_same_each_time(fake_gcloud):
    args = ("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras", "--service-key-secret", "k")
    first, calls_once = fake_gcloud(*args, existing=True)
    second, calls_twice = fake_gcloud(*args, existing=True)
    assert first.returncode == second.returncode == 0
    assert calls_once == calls_twice  # deterministic: the same commands, the same configuration
    assert not [c for c in calls_once if "create" in c[:4] or c[:2] == ["storage", "cp"]]


def _deleted(calls) -> list[list[str]]:
    return [c for c in calls if "delete" in c[:4] or c[:2] == ["storage", "rm"] or "remove-iam-policy-binding" in c]


def test_delete_data_lists_what_it_deletes_and_without_a_terminal_needs_yes(fake_gcloud):
    refused, calls = fake_gcloud("--project", "proj", "--delete-data", existing=True,
                                 FAKE_BUCKET_LABELS=CREATED_BY_DEPLOY)
    assert refused.returncode == 1 and "--yes" in refused.stderr and len(refused.stderr.splitlines()) == 1
    assert _deleted(calls) == []
    for listed in ("create-job job-status classify-image object-arrived dead-letter", "9 service accounts",
                   "classify-image-dead-letter-hold", "the bucket gs://proj-images with every photo",
                   "the Firestore database (default) with every job"):
        assert listed in refused.stdout, listed


def test_delete_data_on_a_terminal_asks_and_deletes_only_on_yes(fake_gcloud):
    import pty

    for answer, deletes in (("no", False), ("yes", True)):
        leader, follower = pty.openpty()
        try:
            os.write(leader, f"{answer}\n".encode())  # typed ahead: read(1) takes the line once it asks
            result, calls = fake_gcloud("--project", "proj", "--delete-data", existing=True, stdin=follower,
                                        FAKE_BUCKET_LABELS=CREATED_BY_DEPLOY)
        finally:
            os.close(leader)
            os.close(follower)
        assert "Type yes to confirm" in result.stderr
        assert (result.returncode == 0) == deletes and bool(_deleted(calls)) == deletes
        assert bool(_find(calls, "storage", "rm")) == deletes


def test_delete_data_never_deletes_a_bucket_or_database_it_did_not_create(fake_gcloud):
    kept, calls = fake_gcloud("--project", "proj", "--delete-data", existing=True)  # no labels: nothing to ask
    assert kept.returncode == 0, kept.stderr
    assert not _find(calls, "storage", "rm") and not _find(calls, "firestore", "databases", "delete")
    assert "kept: the bucket gs://proj-images" in kept.stdout and "did not create it" in kept.stdout
    assert _find(calls, "functions", "delete")  # the rest of the teardown still runs

    # The database only (the bucket was the user's): the database goes, the bucket stays without the label.
    database, calls = fake_gcloud("--project", "proj", "--delete-data", "--yes", existing=True,
                                  FAKE_BUCKET_LABELS='"imgclassify-created-database": "true"')
    assert database.returncode == 0 and _find(calls, "firestore", "databases", "delete")
    assert not _find(calls, "storage", "rm")
    [unlabel] = _find(calls, "storage", "buckets", "update")
    assert _flag(unlabel, "--remove-labels") == ["imgclassify-created-database"]


def test_a_second_deploy_records_nothing_it_did_not_create(fake_gcloud):
    _, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras", existing=True)
    assert not _find(calls, "storage", "buckets", "update")  # an existing bucket is not claimed


def test_a_dry_run_prints_nothing_after_saying_nothing_was_deployed_and_says_what_needs_internet(fake_gcloud):
    result, calls = fake_gcloud("--dry-run", "--project", "proj", "--service-key-secret", "k")
    assert result.returncode == 0 and calls == []
    assert result.stdout.rstrip().splitlines()[-1] == "== dry run: nothing was deployed"
    assert "base URL (POST /classification-job" in result.stdout and "create-job: " in result.stdout
    cached = (REPO / "build/models/resnet50-imagenet.weights.h5").exists()
    assert ("needs internet" in result.stdout) != cached
    offline, _ = fake_gcloud("--dry-run", "--project", "proj", "--weights", fake_gcloud.weights)
    assert "needs internet" not in offline.stdout  # a file given: nothing to download

    teardown, calls = fake_gcloud("--dry-run", "--project", "proj", "--delete-data")
    assert teardown.returncode == 0 and calls == [] and "Type yes" not in teardown.stderr
    assert teardown.stdout.rstrip().splitlines()[-1] == "== dry run: nothing was deleted"
    assert "a dry run reads no labels" in teardown.stdout and "+ gcloud storage rm --recursive" in teardown.stdout


UPLOADER_SA = "imgclassify-uploader@proj.iam.gserviceaccount.com"
THE_KEY = "the-old-systems-key-value"


def downloader_uploader(tmp_path: Path) -> Path:
    """An operator's downloader-uploader folder, as mungujn/downloader-uploader lays it out, with its .env."""
    source = tmp_path / "downloader-uploader"
    (source / "common").mkdir(parents=True)
    (source / "service.py").write_text("from flask import Flask\napp = Flask(__name__)\n")
    (source / "functions.py").write_text("import os\nworking_directory = os.path.join(os.environ['BASE'], "
                                         "os.environ['FOLDER'], os.environ['SUB_FOLDER'])\n")
    (source / "requirements.txt").write_text("flask\npython-dotenv\ndropbox\n")
    (source / "common" / "auth.py").write_text("import os\n")
    (source / ".env").write_text(f"SERVICE_KEY={THE_KEY}\nACCESS_TOKEN=dropbox-token\n")
    return source


def _uploader_deploy(calls) -> list[str]:
    [deploy] = _find(calls, "run", "deploy", "downloader-uploader")
    return deploy


def test_the_downloader_uploader_runs_on_cloud_run_with_the_bucket_as_its_folder(fake_gcloud, tmp_path):
    """Issue 32: --uploader deploys the operator's downloader-uploader, unchanged, with the bucket mounted where its
    BASE/FOLDER/SUB_FOLDER points, as its own identity, with the key from Secret Manager; its URL is printed."""
    source = downloader_uploader(tmp_path)
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                "--service-key-secret", "k", "--uploader", str(source))
    assert result.returncode == 0, result.stderr
    deploy = _uploader_deploy(calls)
    [volume] = _flag(deploy, "--add-volume")
    assert dict(kv.split("=", 1) for kv in volume.split(",")) == {
        "name": "bucket", "type": "cloud-storage", "bucket": "proj-images"}
    [mount] = _flag(deploy, "--add-volume-mount")
    mounted = dict(kv.split("=", 1) for kv in mount.split(","))
    assert mounted["volume"] == "bucket"
    env = dict(kv.split("=", 1) for kv in _flag(deploy, "--set-env-vars")[0].split(","))
    assert os.path.join(env["BASE"], env["FOLDER"], env["SUB_FOLDER"]) == mounted["mount-path"]  # its folder
    assert all(env[name] for name in ("BASE", "FOLDER", "SUB_FOLDER"))  # functions.py reads all three
    assert _flag(deploy, "--set-secrets") == ["SERVICE_KEY=k:latest"]
    assert _flag(deploy, "--service-account") == [UPLOADER_SA]
    assert _flag(deploy, "--build-service-account") == [f"projects/proj/serviceAccounts/{BUILD_SA}"]
    # its jobs live in one process's memory and run in threads after the response
    assert _flag(deploy, "--max-instances") == ["1"] and "--no-cpu-throttling" in deploy
    assert "--allow-unauthenticated" in deploy  # the old client sends the key, not an ID token
    assert _flag(deploy, "--labels") == ["imgclassify-created=true"]  # what a teardown may delete
    build_env = dict(kv.split("=", 1) for kv in _flag(deploy, "--set-build-env-vars")[0].split(","))
    entrypoint = build_env["GOOGLE_ENTRYPOINT"]
    assert entrypoint.startswith(f"mkdir -p {mounted['mount-path']}/all && ")  # its download writes into all/
    assert "flask --app service run --host 0.0.0.0 --port $PORT" in entrypoint

    staged = Path(_flag(deploy, "--source")[0])  # its code as it is, without its .env
    for name in ("service.py", "functions.py", "requirements.txt", "common/auth.py"):
        assert (staged / name).read_bytes() == (source / name).read_bytes()
    assert not (staged / ".env").exists() and (source / ".env").exists()
    assert THE_KEY not in result.stdout + result.stderr and not [c for c in calls if THE_KEY in " ".join(c)]

    assert "imgclassify-uploader" in {c[3] for c in _find(calls, "iam", "service-accounts", "create")}
    member = f"serviceAccount:{UPLOADER_SA}"
    assert {(resource, role) for resource, m, role in _bindings(calls) if m == member} == {
        ("storage gs://proj-images", "roles/storage.objectUser"), ("secrets k", "roles/secretmanager.secretAccessor")}
    assert "downloader-uploader (POST /download-job, POST /upload-job; the bucket is its folder): " \
           "https://downloader-uploader-abc.a.run.app" in result.stdout
    assert "base URL (POST /classification-job, GET /classification-job/<id>): " in result.stdout


def test_without_uploader_no_downloader_uploader_and_no_identity_for_it(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                "--service-key-secret", "k")
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c[:1] == ["run"]] and "downloader-uploader" not in result.stdout
    assert not [b for b in _bindings(calls) if UPLOADER_SA in b[1]]
    assert "imgclassify-uploader" not in {c[3] for c in _find(calls, "iam", "service-accounts", "create")}


@pytest.mark.parametrize("args, message", [
    ((), "--uploader needs --service-key-secret"),
    (("--service-key-secret", "k", "--uploader", "/nonexistent"), "not a downloader-uploader's source folder"),
])
def test_uploader_usage_errors_are_one_line(fake_gcloud, tmp_path, args, message):
    if not args:
        args = ("--uploader", str(downloader_uploader(tmp_path)))
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, *args)
    assert result.returncode != 0 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert calls == []


def test_a_service_of_that_name_deploy_did_not_create_is_neither_replaced_nor_deleted(fake_gcloud, tmp_path):
    args = ("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras", "--service-key-secret", "k",
            "--uploader", str(downloader_uploader(tmp_path)))
    refused, calls = fake_gcloud(*args, existing=True, FAKE_RUN_LABELS="")
    assert refused.returncode != 0 and "did not create" in refused.stderr
    assert not _find(calls, "run", "deploy")
    again, calls = fake_gcloud(*args, existing=True)  # ours (labelled): redeployed in place
    assert again.returncode == 0 and _uploader_deploy(calls)
    kept, calls = fake_gcloud("--project", "proj", "--delete", existing=True, FAKE_RUN_LABELS="")
    assert kept.returncode == 0 and not _find(calls, "run", "services", "delete")
    assert "kept: the Cloud Run service downloader-uploader" in kept.stdout


def test_delete_removes_the_downloader_uploader_and_its_bucket_role(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--delete", existing=True)
    assert result.returncode == 0, result.stderr
    [deleted] = _find(calls, "run", "services", "delete")
    assert deleted[3] == "downloader-uploader" and _flag(deleted, "--region") == ["us-central1"]
    assert UPLOADER_SA in {
        c[3] for c in _find(calls, "iam", "service-accounts", "delete")}
    removed = {(_flag(c, "--member")[0], _flag(c, "--role")[0])
               for c in _find(calls, "storage", "buckets", "remove-iam-policy-binding", "gs://proj-images")}
    assert (f"serviceAccount:{UPLOADER_SA}", "roles/storage.objectUser") in removed  # the bucket is kept
    # before its account goes: a binding of a deleted account can only be removed by its deleted: name
    last_binding = max(i for i, c in enumerate(calls) if "remove-iam-policy-binding" in c)
    assert last_binding < min(i for i, c in enumerate(calls) if c[:3] == ["iam", "service-accounts", "delete"])
    assert "the Cloud Run service downloader-uploader" in result.stdout
    dry, calls = fake_gcloud("--project", "proj", "--delete", "--dry-run")
    assert calls == [] and "+ gcloud run services delete downloader-uploader" in dry.stdout


def test_the_default_match_rule_reaches_every_function(fake_gcloud):
    """Old clients cannot send `match`: --match substring makes the old service's rule the server's default."""
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                "--match", "substring")
    assert result.returncode == 0, result.stderr
    for call in _find(calls, "functions", "deploy"):
        env = dict(kv.split("=", 1) for kv in _flag(call, "--set-env-vars")[0].split(","))
        assert env["DEFAULT_MATCH"] == "substring", call[2]
    from common.config import default

    _, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras")
    env = dict(kv.split("=", 1) for kv in _flag(_find(calls, "functions", "deploy")[0], "--set-env-vars")[0].split(","))
    assert env["DEFAULT_MATCH"] == default("default_match")  # the one settings model's default
    refused, _ = fake_gcloud("--project", "proj", "--match", "fuzzy")
    assert refused.returncode != 0 and "unknown match rule" in refused.stderr


def gcloud_refusals(sdk: str, calls_file: str) -> None:
    """Run in a subprocess (gcloud's own libraries on the path): parse each call with the installed gcloud's
    argument parser — what `gcloud` does before it runs anything — and print, as JSON, each call it refuses with
    gcloud's message. A Cloud Run volume's fields are checked by gcloud after parsing, against the command's release
    track (mount-options, say, is beta's only): checked here by gcloud's own function too. Nothing is run."""
    import contextlib
    import io
    import json
    import sys

    sys.path[:0] = [f"{sdk}/lib", f"{sdk}/lib/third_party"]
    from googlecloudsdk import gcloud_main
    from googlecloudsdk.api_lib.util import apis
    from googlecloudsdk.command_lib.run import volumes

    top = gcloud_main.CreateCLI([])._TopElement()
    refused = []
    for call in json.loads(Path(calls_file).read_text()):
        node, at = top, 0
        while at < len(call) and node.is_group and (child := node.LoadSubElement(call[at])) is not None:
            node, at = child, at + 1
        message = io.StringIO()
        try:
            with contextlib.redirect_stderr(message):
                if node.is_group:
                    raise SystemExit(f"not a command: {call[:at + 1]}")
                parsed = node._parser.parse_args(call[at:])
            for volume in getattr(parsed, "add_volume", None) or []:
                volumes.add_volume(volume, {}, apis.GetMessagesModule("run", "v1"), node.ReleaseTrack())
        except SystemExit as exc:
            refused.append([" ".join(call), message.getvalue().strip() or str(exc)])
        except Exception as exc:  # gcloud's ConfigurationError: a volume it would not build
            refused.append([" ".join(call), str(exc)])
    print(json.dumps(refused))


@pytest.mark.slow
def test_every_gcloud_call_parses_with_the_installed_gcloud(fake_gcloud, tmp_path):
    """The stand-in records what deploy.sh would run; the real gcloud's parser says whether it would accept it
    (every command, flag and flag value: an unknown or misspelt one is refused before gcloud calls anything)."""
    import json
    import shutil
    import sys

    gcloud = shutil.which("gcloud")
    sdk = gcloud and Path(os.path.realpath(gcloud)).parent.parent
    if not sdk or not (sdk / "lib/googlecloudsdk/gcloud_main.py").exists():
        pytest.skip("no installed gcloud (google-cloud-cli)")
    runs = [
        fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                    "--allow-unauthenticated", "--service-key-secret", "k"),
        fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                    "--service-key-secret", "k", existing=True),
        fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, FAKE_PHOTOS="0"),  # samples, finds none
        fake_gcloud("--project", "proj", "--delete-data", "--yes", existing=True,
                    FAKE_BUCKET_LABELS='"imgclassify-created-database": "true"'),
        fake_gcloud("--project", "proj", "--delete-data", "--yes", existing=True, FAKE_BUCKET_LABELS=CREATED_BY_DEPLOY),
        fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras", "--match", "substring",
                    "--service-key-secret", "k", "--uploader", str(downloader_uploader(tmp_path))),
    ]
    calls = [call for result, run_calls in runs for call in run_calls]
    assert all(result.returncode == 0 for result, _ in runs) and len(calls) > 300
    assert [call[:3] for call in calls if call[:2] == ["run", "deploy"]] == [["run", "deploy", "downloader-uploader"]]
    assert _find(calls, "run", "services", "delete") and _find(calls, "storage", "buckets", "remove-iam-policy-binding")
    recorded = tmp_path / "calls.json"
    recorded.write_text(json.dumps(sorted({tuple(call) for call in calls})))
    config = tmp_path / "gcloud-config"  # gcloud's own settings: a fresh folder, no account, nothing reported
    parsed = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.test_deploy import gcloud_refusals; gcloud_refusals(*sys.argv[1:])",
         str(sdk), str(recorded)], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CLOUDSDK_CONFIG": str(config), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
             "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true", "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
             "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false"})
    assert parsed.returncode == 0, parsed.stderr
    assert json.loads(parsed.stdout) == [], parsed.stderr  # gcloud says why on its standard error
