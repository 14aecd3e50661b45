"""Issue 29: the composition root is typed — one Ports value whose fields are the Protocols, no string lookups of
ports, no keyword overrides and no test-only hooks in production code."""
from __future__ import annotations

import inspect
import re
import typing
from pathlib import Path

from common import bootstrap

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = [p for folder in ("common", "imgclassify", "functions") for p in (ROOT / folder).rglob("*.py")]
# What the old root took by keyword or looked up by name, and what a test hook looks like.
FORBIDDEN = {
    "a port looked up by name": re.compile(r"\.port\(\s*[\"']|def port\(self"),
    "overrides by keyword": re.compile(r"\*\*overrides|_overrides\b"),
    "a test-only override key": re.compile(r"[\"'](model_key|detector_key|sleep|background|callbacks|decode)[\"']\s*"
                                           r"(in|\])"),
    "an adapter probed": re.compile(r"hasattr\(\s*(jobs|objects|store|self\.ports)"),
}


def test_production_code_has_no_port_lookups_by_name_overrides_or_test_hooks():
    found = [f"{path.relative_to(ROOT)}:{number}: {what}" for path in PRODUCTION
             for number, line in enumerate(path.read_text().splitlines(), 1)
             for what, pattern in FORBIDDEN.items() if pattern.search(line)]
    assert found == []


def test_every_port_is_typed_by_its_protocol_never_any():
    hints = typing.get_type_hints(bootstrap.Ports)
    assert set(hints) >= {"objects", "jobs", "publisher", "predictions", "corrections", "callbacks", "background",
                          "inference", "events", "retries"}
    assert all(hint is not typing.Any and "Any" not in repr(hint) for hint in hints.values()), hints


def test_an_application_takes_its_settings_and_its_ports_and_nothing_else():
    assert list(inspect.signature(bootstrap.Application).parameters) == ["settings", "ports"]
    assert list(inspect.signature(bootstrap.cloud_app).parameters) == ["settings", "ports"]


def test_a_model_without_a_key_classifies_through_the_same_root_and_stores_nothing():
    """Random weights (MODEL_WEIGHTS=none) have no fingerprint: production's branch that never stores predictions,
    here as production builds it (Inference with model_key None), asked twice."""
    from common.inference.decoding import decode_image
    from tests.fakes import FakeClassifier, fake_app, solid_jpeg

    classifier = FakeClassifier()
    app = fake_app(inference=bootstrap.Inference(classifier=lambda: classifier, model_key=None, decode=decode_image,
                                                 detector=None, detector_key=None))
    app.objects.write("images", "all/a.jpg", solid_jpeg("red"))
    for _ in range(2):
        job = app.create_job({"classes": ["tabby"]})
        while app.publisher.messages:
            app.classify_image(app.publisher.messages.pop(0))
        assert app.job_status(job.id).matches == {"tabby": 1}
    assert classifier.calls == 2 and app.ports.predictions.entries == {}  # type: ignore[attr-defined]
