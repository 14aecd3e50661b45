"""openapi.yaml against the implementation: the same routes, and a schemathesis fuzz run against the local server
that must produce no 5xx and only documented, schema-conformant responses."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from imgclassify.emulation import free_port, wait_for_http
from common.domain.requests import REQUEST_FIELDS, REQUIRED_FIELDS
from common.routes import ROUTES, Action
from tests.fakes import served
from tests.conftest import MOBILENET_TFLITE

REPO = Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((REPO / "openapi.yaml").read_text())


def test_the_document_describes_exactly_the_route_table():
    routed = {(route.template.replace("<id>", "{id}"), route.method.lower()) for route in ROUTES
              if route.action != Action.INDEX}  # the embedded server's HTML index is not part of the API
    documented = {(path, method) for path, item in SPEC["paths"].items() for method in item}
    assert routed == documented


def test_the_request_schema_is_the_one_the_service_validates():
    documented = SPEC["components"]["schemas"]["JobRequest"]
    assert set(documented["properties"]) == set(REQUEST_FIELDS) and documented["required"] == list(REQUIRED_FIELDS)
    for name, field in REQUEST_FIELDS.items():
        prop = documented["properties"][name]
        assert prop["type"] == field.type, name
        assert (prop.get("minimum"), prop.get("maximum")) == (field.minimum, field.maximum), name
        assert prop.get("maxLength") == field.max_length and tuple(prop.get("enum", ())) == (field.enum or ()), name


def test_documented_example_is_accepted(fake_service):
    example = SPEC["paths"]["/classification-job"]["post"]["requestBody"]["content"]["application/json"]["example"]
    response = served(fake_service).post("/classification-job", json=example)
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
