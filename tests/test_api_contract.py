"""openapi.yaml against the implementation: the same routes, and a schemathesis fuzz run against the local server
that must produce no 5xx and only documented, schema-conformant responses."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imgclassify.emulation import free_port, wait_for_http
from common.http import create_app
from tests.conftest import MOBILENET_TFLITE

REPO = Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((REPO / "openapi.yaml").read_text())


def test_the_document_describes_exactly_the_served_routes(fake_service):
    app = create_app(fake_service.create_job, fake_service.job_status, fake_service.settings,
                     fake_service.undo_job, fake_service.close_job)
    served = {(re.sub(r"<(?:\w+:)?\w+>", "{id}", rule.rule), method.lower())
              for rule in app.url_map.iter_rules() if rule.endpoint != "static"
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in SPEC["paths"].items() for method in item}
    assert served == documented


def test_documented_example_is_accepted(fake_service):
    example = SPEC["paths"]["/classification-job"]["post"]["requestBody"]["content"]["application/json"]["example"]
    response = create_app(fake_service.create_job, fake_service.job_status, fake_service.settings,
                     fake_service.undo_job, fake_service.close_job).test_client().post("/classification-job", json=example)
    assert response.status_code == 201
    assert set(SPEC["components"]["schemas"]["JobStatus"]["required"]) <= set(response.get_json())


@pytest.mark.slow
def test_fuzzing_the_local_server_finds_no_server_errors(tmp_path, shared):
    (tmp_path / "all").mkdir()
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("imgclassify")), "serve", str(tmp_path), "--port",
                               str(port), "--model", "mobilenet_v2", "--weights", str(MOBILENET_TFLITE)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/classification-job/{'0' * 32}", 60, server)
        fuzz = subprocess.run(
            [str(Path(sys.executable).with_name("st")), "run", str(REPO / "openapi.yaml"), "--url", base,
             "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
                         "response_schema_conformance,negative_data_rejection",
             "--max-examples", "60", "--generation-deterministic", "--workers", "1"],
            capture_output=True, text=True, timeout=600)
        assert fuzz.returncode == 0, fuzz.stdout[-4000:]
    finally:
        server.send_signal(signal.SIGINT)
        server.communicate(timeout=30)
