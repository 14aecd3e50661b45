"""Issue 23: `pip install .` is what someone who only sorts folders installs: LiteRT, no TensorFlow, no cloud
clients, no test tools. Installed into a fresh virtual environment (pip's cache makes it quick once ./setup.sh has
run), it sorts a folder of real photos with a .tflite file alone, and asking it for what needs TensorFlow is one
line saying what to install."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from tests.conftest import MOBILENET_H5, MOBILENET_TFLITE

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def slim(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("slim") / "venv"
    venv.create(where, with_pip=True)
    installed = subprocess.run([str(where / "bin/python"), "-m", "pip", "install", "--quiet", "-c",
                                str(REPO / "constraints.txt"), str(REPO)], capture_output=True, text=True,
                               timeout=600)
    assert installed.returncode == 0, installed.stderr[-2000:]
    return where


def test_the_slim_install_has_no_tensorflow_cloud_clients_or_test_tools(slim):
    listed = subprocess.run([str(slim / "bin/python"), "-m", "pip", "list", "--format", "json"],
                            capture_output=True, text=True, timeout=120)
    names = {row["name"].lower() for row in json.loads(listed.stdout)}
    assert "ai-edge-litert" in names and "imgclassify" in names
    heavy = {n for n in names if n.startswith(("tensorflow", "keras", "google-cloud", "functions-framework",
                                                "pytest", "playwright", "schemathesis"))}
    assert heavy == set()


def test_the_slim_install_sorts_a_folder_with_a_tflite_file_alone(slim, tmp_path, shared):
    root = tmp_path / "trip"
    shutil.copytree(shared / "photos/coral", root / "all", ignore=shutil.ignore_patterns("COPYRIGHT*", "*.txt"))
    env = {**os.environ, "IMGCLASSIFY_CACHE": str(tmp_path / "cache"), "PYTHONPATH": ""}
    imgclassify = str(slim / "bin/imgclassify")
    ran = subprocess.run([imgclassify, "run", str(root), "--classes", "dogs", "birds", "--weights",
                          str(MOBILENET_TFLITE), "--json"], capture_output=True, text=True, timeout=300, env=env,
                         cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    view = json.loads(ran.stdout)
    assert view["model"].startswith("litert:mobilenet_v2") and view["failed"] == 0
    copied = sorted(p.relative_to(root).as_posix() for c in ("dogs", "birds") if (root / c).exists()
                    for p in (root / c).rglob("*") if p.is_file())
    assert len(copied) == view["matches"]["dogs"] + view["matches"]["birds"] > 0
    assert "XNNPACK" not in ran.stderr  # LiteRT's native chatter stays off the terminal
    keras = subprocess.run([imgclassify, "run", str(root), "--classes", "dogs", "--weights", str(MOBILENET_H5)],
                           capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert keras.returncode == 2 and "Traceback" not in keras.stderr
    assert "pip install 'imgclassify[keras]'" in keras.stderr.strip().splitlines()[-1]
