"""What the deploy.sh tests share: a stand-in `gcloud` on PATH that records every call (no cloud is touched), the
runner that starts deploy.sh with it, readers of the recorded calls, an operator's downloader-uploader folder, and
the installed gcloud's own parser to check the calls with."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

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
"""  # noqa: E501 - the stand-in gcloud's recorded answers, verbatim


def fake_gcloud(tmp_path: Path) -> Any:
    """deploy(*args, existing=False, stdin=…, **env) runs deploy.sh with the stand-in gcloud first on PATH and
    returns (the finished process, each recorded call as its argument list); .weights is a weights file to pass."""
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


def find(calls, *prefix):
    return [c for c in calls if c[:len(prefix)] == list(prefix)]


def flag(call, name):
    return [a.split("=", 1)[1] for a in call if a.startswith(name + "=")] or \
        [call[i + 1] for i, a in enumerate(call[:-1]) if a == name]


TRIGGER_SA = "imgclassify-trigger@proj.iam.gserviceaccount.com"


BUILD_SA = "imgclassify-build@proj.iam.gserviceaccount.com"


GATEWAY_SA = "imgclassify-gateway@proj.iam.gserviceaccount.com"


def bindings(calls) -> set[tuple[str, str, str]]:
    """(resource, member, role) of every IAM binding deploy.sh added."""
    found = set()
    for call in calls:
        if "add-iam-policy-binding" in call or "add-invoker-policy-binding" in call:
            at = call.index("add-iam-policy-binding" if "add-iam-policy-binding" in call else
                            "add-invoker-policy-binding")
            role = (flag(call, "--role") or ["roles/run.invoker"])[0]
            found.add((f"{call[0]} {call[at + 1]}", flag(call, "--member")[0], role))
    return found


CREATED_BY_DEPLOY = '"imgclassify-created": "true", "imgclassify-created-database": "true"'


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

