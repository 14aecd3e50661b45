"""What the old system's clients reach once deployed (issues 22 and 32), against the recording stand-in `gcloud`:
one base URL through the API Gateway, the downloader-uploader on Cloud Run with the bucket as its folder
(`--uploader DIR`), and the old service's match rule as every function's default."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import deploy_support
from tests.deploy_support import find, flag, BUILD_SA, GATEWAY_SA, bindings, UPLOADER_SA, THE_KEY, downloader_uploader


@pytest.fixture
def fake_gcloud(tmp_path):
    return deploy_support.fake_gcloud(tmp_path)


def test_one_base_url_api_gateway_forwards_every_old_path_and_status_url_points_at_it(fake_gcloud):
    """Issue 22: the old clients' one base URL, deployed: an API Gateway config generated from the route table."""
    import yaml

    from common.routes import ROUTES, Function

    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                "--service-key-secret", "k")
    assert result.returncode == 0, result.stderr
    [config] = find(calls, "api-gateway", "api-configs", "create")
    assert flag(config, "--backend-auth-service-account") == [GATEWAY_SA]
    spec = yaml.safe_load(Path(flag(config, "--openapi-spec")[0]).read_text())
    assert spec["swagger"] == "2.0"
    for route in ROUTES:
        if route.function == Function.NONE:
            continue
        operation = spec["paths"][route.template.replace("<id>", "{id}")][route.method.lower()]
        backend = operation["x-google-backend"]
        assert backend["address"] == "https://us-central1-proj.cloudfunctions.net/" + \
            {"create_job": "create-job", "job_status": "job-status"}[route.function]
        assert backend["path_translation"] == "APPEND_PATH_TO_ADDRESS"
    [gateway] = find(calls, "api-gateway", "gateways", "create")
    assert flag(gateway, "--api-config") == [config[3]]
    for name in ("create-job", "job-status"):
        env = dict(kv.split("=", 1) for kv in flag(find(calls, "functions", "deploy", name)[0],
                                                     "--set-env-vars")[0].split(","))
        assert env["STATUS_URL_BASE"] == "https://imgclassify-abc.uc.gateway.dev"
    assert "base URL (POST /classification-job, GET /classification-job/<id>): " \
           "https://imgclassify-abc.uc.gateway.dev" in result.stdout
    again, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                               "--service-key-secret", "k", existing=True)
    assert again.returncode == 0 and not find(calls, "api-gateway", "gateways", "create")
    assert not find(calls, "api-gateway", "api-configs", "create")  # the same config: nothing new


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
    env = dict(kv.split("=", 1) for kv in flag(find(calls, "functions", "deploy", "create-job")[0],
                                                 "--set-env-vars")[0].split(","))
    assert env["STATUS_URL_BASE"] == "https://us-central1-proj.cloudfunctions.net/job-status"


def _uploader_deploy(calls) -> list[str]:
    [deploy] = find(calls, "run", "deploy", "downloader-uploader")
    return deploy


def test_the_downloader_uploader_runs_on_cloud_run_with_the_bucket_as_its_folder(fake_gcloud, tmp_path):
    """Issue 32: --uploader deploys the operator's downloader-uploader, unchanged, with the bucket mounted where its
    BASE/FOLDER/SUB_FOLDER points, as its own identity, with the key from Secret Manager; its URL is printed."""
    source = downloader_uploader(tmp_path)
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                "--service-key-secret", "k", "--uploader", str(source))
    assert result.returncode == 0, result.stderr
    deploy = _uploader_deploy(calls)
    [volume] = flag(deploy, "--add-volume")
    assert dict(kv.split("=", 1) for kv in volume.split(",")) == {
        "name": "bucket", "type": "cloud-storage", "bucket": "proj-images"}
    [mount] = flag(deploy, "--add-volume-mount")
    mounted = dict(kv.split("=", 1) for kv in mount.split(","))
    assert mounted["volume"] == "bucket"
    env = dict(kv.split("=", 1) for kv in flag(deploy, "--set-env-vars")[0].split(","))
    assert os.path.join(env["BASE"], env["FOLDER"], env["SUB_FOLDER"]) == mounted["mount-path"]  # its folder
    assert all(env[name] for name in ("BASE", "FOLDER", "SUB_FOLDER"))  # functions.py reads all three
    assert flag(deploy, "--set-secrets") == ["SERVICE_KEY=k:latest"]
    assert flag(deploy, "--service-account") == [UPLOADER_SA]
    assert flag(deploy, "--build-service-account") == [f"projects/proj/serviceAccounts/{BUILD_SA}"]
    # its jobs live in one process's memory and run in threads after the response
    assert flag(deploy, "--max-instances") == ["1"] and "--no-cpu-throttling" in deploy
    assert "--allow-unauthenticated" in deploy  # the old client sends the key, not an ID token
    assert flag(deploy, "--labels") == ["imgclassify-created=true"]  # what a teardown may delete
    build_env = dict(kv.split("=", 1) for kv in flag(deploy, "--set-build-env-vars")[0].split(","))
    entrypoint = build_env["GOOGLE_ENTRYPOINT"]
    assert entrypoint.startswith(f"mkdir -p {mounted['mount-path']}/all && ")  # its download writes into all/
    assert "flask --app service run --host 0.0.0.0 --port $PORT" in entrypoint

    staged = Path(flag(deploy, "--source")[0])  # its code as it is, without its .env
    for name in ("service.py", "functions.py", "requirements.txt", "common/auth.py"):
        assert (staged / name).read_bytes() == (source / name).read_bytes()
    assert not (staged / ".env").exists() and (source / ".env").exists()
    assert THE_KEY not in result.stdout + result.stderr and not [c for c in calls if THE_KEY in " ".join(c)]

    assert "imgclassify-uploader" in {c[3] for c in find(calls, "iam", "service-accounts", "create")}
    member = f"serviceAccount:{UPLOADER_SA}"
    assert {(resource, role) for resource, m, role in bindings(calls) if m == member} == {
        ("storage gs://proj-images", "roles/storage.objectUser"), ("secrets k", "roles/secretmanager.secretAccessor")}
    assert "downloader-uploader (POST /download-job, POST /upload-job; the bucket is its folder): " \
           "https://downloader-uploader-abc.a.run.app" in result.stdout
    assert "base URL (POST /classification-job, GET /classification-job/<id>): " in result.stdout


def test_without_uploader_no_downloader_uploader_and_no_identity_for_it(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                "--service-key-secret", "k")
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if c[:1] == ["run"]] and "downloader-uploader" not in result.stdout
    assert not [b for b in bindings(calls) if UPLOADER_SA in b[1]]
    assert "imgclassify-uploader" not in {c[3] for c in find(calls, "iam", "service-accounts", "create")}


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
    assert not find(calls, "run", "deploy")
    again, calls = fake_gcloud(*args, existing=True)  # ours (labelled): redeployed in place
    assert again.returncode == 0 and _uploader_deploy(calls)
    kept, calls = fake_gcloud("--project", "proj", "--delete", existing=True, FAKE_RUN_LABELS="")
    assert kept.returncode == 0 and not find(calls, "run", "services", "delete")
    assert "kept: the Cloud Run service downloader-uploader" in kept.stdout


def test_the_default_match_rule_reaches_every_function(fake_gcloud):
    """Old clients cannot send `match`: --match substring makes the old service's rule the server's default."""
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras",
                                "--match", "substring")
    assert result.returncode == 0, result.stderr
    for call in find(calls, "functions", "deploy"):
        env = dict(kv.split("=", 1) for kv in flag(call, "--set-env-vars")[0].split(","))
        assert env["DEFAULT_MATCH"] == "substring", call[2]
    from common.config import default

    _, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--runtime", "keras")
    env = dict(kv.split("=", 1) for kv in flag(find(calls, "functions", "deploy")[0], "--set-env-vars")[0].split(","))
    assert env["DEFAULT_MATCH"] == default("default_match")  # the one settings model's default
    refused, _ = fake_gcloud("--project", "proj", "--match", "fuzzy")
    assert refused.returncode != 0 and "unknown match rule" in refused.stderr

