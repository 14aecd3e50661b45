"""Corrections a job followed (issue 30): each photo a person's correction placed against the models' answer is
marked on its result and counted with the job's kept counters, so status says per class how many, at any size."""
from __future__ import annotations

from tests.fakes import fake_app, solid_jpeg


def _run(app, classes):
    view = app.create_job({"classes": classes})
    for message in [m for m in app.publisher.messages if m.job_id == view.id]:
        app.classify_image(message)
    return view.id


def test_a_job_counts_the_photos_corrections_placed_and_says_so_in_its_status():
    app = fake_app()
    for name, colour in {"cat.jpg": "red", "cat2.jpg": "red", "bird.jpg": "blue"}.items():
        app.objects.write("images", f"all/{name}", solid_jpeg(colour))
    first = _run(app, ["tabby", "macaw"])
    results = {r.name: r for r in app.jobs.results(first)}
    assert results["all/cat.jpg"].matched == ("tabby",) and results["all/bird.jpg"].matched == ("macaw",)
    assert app.jobs.counters(first).corrected == {}
    # What people said: the first cat is no tabby, the bird is one.
    app.ports.corrections.record_correction("images", "tabby", results["all/cat.jpg"].content, False)
    app.ports.corrections.record_correction("images", "tabby", results["all/bird.jpg"].content, True)

    second = _run(app, ["tabby", "macaw"])
    after = {r.name: r for r in app.jobs.results(second)}
    assert after["all/cat.jpg"].matched == () and after["all/cat.jpg"].corrected == ("tabby",)
    assert after["all/bird.jpg"].matched == ("tabby", "macaw") and after["all/bird.jpg"].corrected == ("tabby",)
    assert after["all/cat2.jpg"].corrected == ("tabby",)  # the same bytes under another name: the same photo
    body = app.job_status(second).body
    assert body["corrections_followed"] == {"tabby": 3} and body["matches"] == {"tabby": 1, "macaw": 1}
    assert "corrections_followed" not in app.job_status(first).body


def test_run_and_status_say_which_corrections_were_followed(tmp_path, shared):
    """On a folder: a correction kept from an earlier job puts the photo where the person said, and `run` and
    `status` both say so per class (their JSON as the HTTP status does)."""
    import json
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from common.adapters.local import SqlitePredictionStore
    from common.domain.predictions import content_fingerprint
    from tests.conftest import MOBILENET_TFLITE

    cli = str(Path(sys.executable).with_name("imgclassify"))
    root = tmp_path / "dir"
    (root / "all").mkdir(parents=True)
    for name in ("bird.bmp", "cat.bmp", "parrot.jpg"):
        shutil.copy(shared / "photos/coral" / name, root / "all" / name)
    run = [cli, "run", str(root), "--classes", "birds", "--weights", str(MOBILENET_TFLITE), "--json"]
    first = json.loads(subprocess.run(run, capture_output=True, text=True, timeout=300, check=True).stdout)
    assert first["matches"]["birds"] == 2 and "corrections_followed" not in first
    store = SqlitePredictionStore(root / ".imgclassify/jobs.sqlite3")
    store.record_correction("local", "birds", content_fingerprint((root / "all/cat.bmp").read_bytes()), True)
    store.close()

    second = subprocess.run(run[:-1], capture_output=True, text=True, timeout=300, check=True)
    assert "corrections followed" in second.stdout and "birds 1" in second.stdout
    assert (root / "birds/cat.bmp").exists()
    status = subprocess.run([cli, "status", str(root), "--json"], capture_output=True, text=True, timeout=120,
                            check=True)
    view = json.loads(status.stdout)
    assert view["corrections_followed"] == {"birds": 1} and view["matches"]["birds"] == 3
