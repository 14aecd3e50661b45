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
  *" describe "*"--format=value(projectNumber)"*) echo 424242; exit 0 ;;
  *"functions describe classify-image"*"eventTrigger.trigger"*) echo projects/p/locations/r/triggers/classify-trigger; exit 0 ;;
  *"eventarc triggers describe"*) echo projects/p/subscriptions/eventarc-classify-sub; exit 0 ;;
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
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "GCLOUD_LOG": str(log)}
    env.pop("GOOGLE_CLOUD_PROJECT", None)

    def deploy(*args: str, existing: bool = False) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
        log.write_text("")
        result = subprocess.run(["bash", str(REPO / "deploy.sh"), *args], capture_output=True, text=True,
                                env={**env, "FAKE_GCLOUD_EXISTING": "1" if existing else "0"}, timeout=120)
        calls = [line.split("\x1f")[:-1] for line in log.read_text().splitlines()]
        return result, calls

    deploy.weights = str(weights)  # type: ignore[attr-defined]
    return deploy


def _find(calls, *prefix):
    return [c for c in calls if c[:len(prefix)] == list(prefix)]


def _flag(call, name):
    return [a.split("=", 1)[1] for a in call if a.startswith(name + "=")] or \
        [call[i + 1] for i, a in enumerate(call[:-1]) if a == name]


def test_first_deploy_creates_everything_and_deploys_three_functions(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights)

    assert result.returncode == 0, result.stderr
    enabled = _find(calls, "services", "enable")[0]
    for api in ("cloudfunctions", "run", "eventarc", "pubsub", "firestore", "storage", "cloudbuild"):
        assert f"{api}.googleapis.com" in enabled
    assert _find(calls, "storage", "buckets", "create", "gs://proj-images")
    assert {c[3] for c in _find(calls, "pubsub", "topics", "create")} == {"classify-image",
                                                                          "classify-image-dead-letter"}
    [upload] = _find(calls, "storage", "cp")
    assert upload[2] == fake_gcloud.weights and upload[3].startswith("gs://proj-images/models/")

    deploys = {c[2]: c for c in _find(calls, "functions", "deploy")}
    assert set(deploys) == {"create-job", "job-status", "classify-image"}
    for name, call in deploys.items():
        assert "--gen2" in call and _flag(call, "--runtime") == ["python311"]
        assert _flag(call, "--entry-point") == [name.replace("-", "_")]
        source = Path(_flag(call, "--source")[0])
        assert (source / "main.py").exists() and (source / "common" / "bootstrap.py").exists()
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

    [update] = _find(calls, "pubsub", "subscriptions", "update")
    assert update[3] == "projects/p/subscriptions/eventarc-classify-sub"
    assert _flag(update, "--dead-letter-topic") == ["classify-image-dead-letter"]
    assert _flag(update, "--max-delivery-attempts") == ["10"]
    assert "create-job: https://create-job-abc.a.run.app" in result.stdout


def test_second_deploy_creates_nothing(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, existing=True)

    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if "create" in c[:4] or c[:2] == ["storage", "cp"]]
    assert len(_find(calls, "functions", "deploy")) == 3


def test_litert_weights_ship_without_tensorflow(fake_gcloud, tmp_path):
    tflite = tmp_path / "resnet50.int8.tflite"
    tflite.write_bytes(b"tflite")
    result, calls = fake_gcloud("--project", "proj", "--weights", str(tflite))
    assert result.returncode == 0, result.stderr
    classify = _find(calls, "functions", "deploy", "classify-image")[0]
    requirements = (Path(_flag(classify, "--source")[0]) / "requirements.txt").read_text()
    assert "ai-edge-litert==" in requirements and "tensorflow" not in requirements


def test_dry_run_prints_every_command_and_runs_none(fake_gcloud):
    result, calls = fake_gcloud("--dry-run", "--project", "proj", "--weights", fake_gcloud.weights)
    assert result.returncode == 0, result.stderr
    assert calls == []
    assert result.stdout.count("+ gcloud functions deploy") == 3
    assert "+ gcloud pubsub subscriptions update" in result.stdout


def test_service_key_comes_from_secret_manager_for_the_http_functions_only(fake_gcloud):
    result, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--service-key-secret",
                                "old-clients-key")
    assert result.returncode == 0, result.stderr
    for name in ("create-job", "job-status"):
        assert _flag(_find(calls, "functions", "deploy", name)[0], "--set-secrets") == [
            "SERVICE_KEY=old-clients-key:latest"]
    assert "--set-secrets" not in _find(calls, "functions", "deploy", "classify-image")[0]


def test_public_access_is_opt_in(fake_gcloud):
    _, calls = fake_gcloud("--project", "proj", "--weights", fake_gcloud.weights, "--allow-unauthenticated")
    assert "--allow-unauthenticated" in _find(calls, "functions", "deploy", "create-job")[0]


@pytest.mark.parametrize("args, message", [
    (("--project", "proj"), "no model weights"),
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
    result, calls = fake_gcloud("--dry-run", "--project", "proj", "--weights", fake_gcloud.weights,
                                "--build-litert", str(photos))
    assert result.returncode == 0, result.stderr
    assert "tools/build_tflite.py" in result.stdout and calls == []
    assert "MODEL_RUNTIME=litert" in result.stdout and ".tflite" in result.stdout
    requirements = (REPO / "build/deploy/classify_image/requirements.txt").read_text()
    assert "ai-edge-litert==" in requirements and "tensorflow" not in requirements
