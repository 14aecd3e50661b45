"""deploy.sh against a stand-in `gcloud` on PATH that records every call (no cloud is touched): a first deploy,
the identities and their roles, retries, the weights it ships, a second run, dry runs, usage errors, and every
recorded call parsed by the installed gcloud."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import deploy_support
from tests.deploy_support import REPO, find, flag, TRIGGER_SA, BUILD_SA, GATEWAY_SA, bindings, CREATED_BY_DEPLOY, downloader_uploader


@pytest.fixture
def fake_gcloud(tmp_path):
    return deploy_support.fake_gcloud(tmp_path)


def test_first_deploy_creates_everything_and_deploys_five_functions(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras")

    assert result.returncode == 0, result.stderr
    enabled = find(calls, "services", "enable")[0]
    for api in ("cloudfunctions", "run", "eventarc", "pubsub", "firestore", "storage", "cloudbuild", "logging",
                "cloudresourcemanager", "iam"):
        assert f"{api}.googleapis.com" in enabled
    # Every command names the project (`projects …` commands take it as their argument).
    assert all("--project" in call or call[:1] == ["projects"] and call[2] == "proj" or call[:2] == ["auth", "list"]
               or call[:3] == ["billing", "projects", "describe"] and call[3] == "proj"
               for call in calls)  # (which account is logged in is no project's)
    assert find(calls, "storage", "buckets", "create", "gs://proj-images")
    # what it created is recorded on the bucket: --delete-data deletes only that
    [labels] = find(calls, "storage", "buckets", "update", "gs://proj-images")
    assert flag(labels, "--update-labels") == ["imgclassify-created=true,imgclassify-created-database=true"]
    assert {c[3] for c in find(calls, "pubsub", "topics", "create")} == {
        "classify-image", "classify-image-dead-letter", "classify-image-uploads", "job-events"}
    [upload] = find(calls, "storage", "cp")
    assert upload[2] == fake_gcloud.weights and upload[3].startswith("gs://proj-images/models/")

    deploys = {c[2]: c for c in find(calls, "functions", "deploy")}
    assert set(deploys) == {"create-job", "job-status", "classify-image", "object-arrived", "dead-letter"}
    for name, call in deploys.items():
        assert "--gen2" in call and flag(call, "--runtime") == ["python311"]
        assert flag(call, "--entry-point") == [name.replace("-", "_")]
        source = Path(flag(call, "--source")[0])
        assert (source / "main.py").exists() and (source / "common" / "bootstrap" / "__init__.py").exists()
        # common/ ships whole and the local tooling not at all
        assert (source / "common/usecases/create_job.py").exists() and not (source / "imgclassify").exists()
    for name in ("create-job", "job-status"):
        assert "--trigger-http" in deploys[name] and "--no-allow-unauthenticated" in deploys[name]
        assert "--allow-unauthenticated" not in deploys[name]
    classify = deploys["classify-image"]
    assert flag(classify, "--trigger-topic") == ["classify-image"] and "--retry" in classify
    env = dict(kv.split("=", 1) for kv in flag(classify, "--set-env-vars")[0].split(","))
    assert env["MODEL"] == "resnet50" and env["MODEL_WEIGHTS"] == upload[3]
    requirements = (Path(flag(classify, "--source")[0]) / "requirements.txt").read_text()
    assert "tensorflow-cpu==" in requirements and "ai-edge-litert" not in requirements

    updates = {c[3]: c for c in find(calls, "pubsub", "subscriptions", "update")}
    # classify-image's and object-arrived's deliveries are capped and dead-lettered; dead-letter's are not (a loop)
    capped = {name for name, call in updates.items() if flag(call, "--dead-letter-topic")}
    assert capped == {"projects/p/subscriptions/eventarc-classify-image-sub",
                      "projects/p/subscriptions/eventarc-object-arrived-sub"}
    assert set(updates) == capped | {"projects/p/subscriptions/eventarc-dead-letter-sub"}
    for name in capped:
        assert flag(updates[name], "--dead-letter-topic") == ["classify-image-dead-letter"]
        assert flag(updates[name], "--max-delivery-attempts") == ["10"]
    # a cold start plus the 120 s function timeout
    assert int(flag(updates["projects/p/subscriptions/eventarc-classify-image-sub"], "--ack-deadline")[0]) >= 300
    dead_letter = deploys["dead-letter"]
    assert flag(dead_letter, "--trigger-topic") == ["classify-image-dead-letter"] and "--retry" in dead_letter
    for name in ("classify-image", "object-arrived", "dead-letter"):  # reached by Eventarc only
        assert flag(deploys[name], "--ingress-settings") == ["internal-only"]
    [hold] = find(calls, "pubsub", "subscriptions", "create")
    assert flag(hold, "--expiration-period") == ["never"]  # the default 31-day expiry drops dead letters
    for call in deploys.values():
        env = dict(kv.split("=", 1) for kv in flag(call, "--set-env-vars")[0].split(","))
        assert env["THREADS"] == flag(call, "--concurrency")[0]  # functions-framework's default is 4 x CPUs
    assert "create-job: https://create-job-abc.a.run.app" in result.stdout


def test_each_function_runs_as_its_own_identity_with_least_privilege(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                "--service-key-secret", "old-clients-key")

    assert result.returncode == 0, result.stderr
    created = {c[3] for c in find(calls, "iam", "service-accounts", "create")}
    assert created == {f"imgclassify-{n}" for n in ("create", "status", "classify", "objects", "deadletter",
                                                     "trigger", "build", "gateway")}
    sa = {n: f"serviceAccount:imgclassify-{n}@proj.iam.gserviceaccount.com" for n in
          ("create", "status", "classify", "objects", "deadletter")}
    granted = bindings(calls)
    assert granted >= {
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
    assert {(r, role) for r, m, role in granted if m == sa["status"]} == {
        ("storage gs://proj-images", "roles/storage.objectViewer"), ("projects proj", "roles/datastore.viewer"),
        ("projects proj", "roles/logging.logWriter"), ("secrets old-clients-key", "roles/secretmanager.secretAccessor")}
    # Nothing broader: no Editor, Owner or the Cloud Build builder role.
    assert not [b for b in granted if b[2] in ("roles/editor", "roles/owner", "roles/cloudbuild.builds.builder")]
    own = {"create-job": "create", "job-status": "status", "classify-image": "classify",
           "object-arrived": "objects", "dead-letter": "deadletter"}
    for call in find(calls, "functions", "deploy"):
        assert flag(call, "--service-account") == [sa[own[call[2]]].removeprefix("serviceAccount:")]
        assert flag(call, "--build-service-account") == [f"projects/proj/serviceAccounts/{BUILD_SA}"]
    assert flag(find(calls, "functions", "deploy", "classify-image")[0], "--trigger-service-account") == [
        TRIGGER_SA]
    assert "secretmanager.googleapis.com" in find(calls, "services", "enable")[0]


def test_uploads_under_all_notify_the_uploads_topic_once(fake_gcloud):
    _, first = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras")
    _, second = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                            existing=True)
    [notification] = find(first, "storage", "buckets", "notifications", "create")
    assert notification[4] == "gs://proj-images" and flag(notification, "--topic") == ["classify-image-uploads"]
    assert flag(notification, "--event-types") == ["OBJECT_FINALIZE"] and flag(notification, "--object-prefix") \
        == ["all/"]
    assert find(second, "storage", "buckets", "notifications", "create") == []
    arrived = find(first, "functions", "deploy", "object-arrived")[0]
    assert flag(arrived, "--trigger-topic") == ["classify-image-uploads"] and "--retry" in arrived


def test_the_first_event_triggered_deploy_is_retried_while_eventarc_permissions_propagate(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                FAKE_DEPLOY_FAILURES="2", RETRY_SECONDS="0")

    assert result.returncode == 0, result.stderr
    assert len(find(calls, "functions", "deploy", "classify-image")) == 3
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
    assert "no photos in gs://proj-images/all/" in empty.stdout and find(calls, "storage", "ls")
    requirements = (Path(flag(find(calls, "functions", "deploy", "classify-image")[0], "--source")[0])
                    / "requirements.txt").read_text()
    assert "tensorflow-cpu==" in requirements


def test_second_deploy_creates_nothing(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                existing=True)

    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if "create" in c[:4] or c[:2] == ["storage", "cp"]]
    assert len(find(calls, "functions", "deploy")) == 5


def test_litert_weights_ship_without_tensorflow(fake_gcloud, tmp_path):
    tflite = tmp_path / "resnet50.int8.tflite"
    tflite.write_bytes(b"tflite")
    result, calls = fake_gcloud("--project", "proj", "--weights", str(tflite))
    assert result.returncode == 0, result.stderr
    classify = find(calls, "functions", "deploy", "classify-image")[0]
    requirements = (Path(flag(classify, "--source")[0]) / "requirements.txt").read_text()
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
        assert flag(find(calls, "functions", "deploy", name)[0], "--set-secrets") == [
            "SERVICE_KEY=old-clients-key:latest"], name
    assert "--set-secrets" not in find(calls, "functions", "deploy", "object-arrived")[0]  # sends none


def test_public_access_is_opt_in_and_never_without_a_key(fake_gcloud):
    _, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                           "--allow-unauthenticated", "--service-key-secret", "k")
    assert "--allow-unauthenticated" in find(calls, "functions", "deploy", "create-job")[0]
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
    assert not find(calls, "functions", "deploy")


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


@pytest.mark.parametrize("failure, words", [
    ({"FAKE_NO_ACCOUNT": "1"}, "gcloud auth login"),
    ({"FAKE_NO_PROJECT": "1"}, "does not exist"),
    ({"FAKE_NO_BILLING": "1"}, "billing is not enabled"),
])
def test_the_preflight_stops_early_in_one_line(fake_gcloud, failure, words):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras", **failure)
    assert result.returncode == 1 and words in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not find(calls, "services", "enable") and not find(calls, "functions", "deploy")


def test_the_preflight_warns_of_roles_it_cannot_see_and_carries_on(fake_gcloud):
    result, _ = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                            FAKE_ROLES="roles/pubsub.admin roles/storage.admin")
    assert result.returncode == 0 and "WARNING" in result.stdout and "roles/eventarc.admin" in result.stdout


def test_running_it_again_on_a_deployed_project_changes_nothing_and_is_the_same_each_time(fake_gcloud):
    args = ("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras", "--service-key-secret", "k")
    first, calls_once = fake_gcloud(*args, existing=True)
    second, calls_twice = fake_gcloud(*args, existing=True)
    assert first.returncode == second.returncode == 0
    assert calls_once == calls_twice  # deterministic: the same commands, the same configuration
    assert not [c for c in calls_once if "create" in c[:4] or c[:2] == ["storage", "cp"]]


def test_a_second_deploy_records_nothing_it_did_not_create(fake_gcloud):
    _, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras", existing=True)
    assert not find(calls, "storage", "buckets", "update")  # an existing bucket is not claimed


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
    assert find(calls, "run", "services", "delete") and find(calls, "storage", "buckets", "remove-iam-policy-binding")
    recorded = tmp_path / "calls.json"
    recorded.write_text(json.dumps(sorted({tuple(call) for call in calls})))
    config = tmp_path / "gcloud-config"  # gcloud's own settings: a fresh folder, no account, nothing reported
    parsed = subprocess.run(
        [sys.executable, "-c", "import sys; from tests.deploy_support import gcloud_refusals; gcloud_refusals(*sys.argv[1:])",
         str(sdk), str(recorded)], cwd=REPO, capture_output=True, text=True, timeout=300,
        env={**os.environ, "CLOUDSDK_CONFIG": str(config), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
             "CLOUDSDK_CORE_DISABLE_USAGE_REPORTING": "true", "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "true",
             "CLOUDSDK_CORE_CHECK_GCE_METADATA": "false"})
    assert parsed.returncode == 0, parsed.stderr
    assert json.loads(parsed.stdout) == [], parsed.stderr  # gcloud says why on its standard error

