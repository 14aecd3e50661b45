from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes import FakeApp, fake_app

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SHARED_DIR", REPO_ROOT.parent / "shared"))
MOBILENET_H5 = SHARED / "models/mobilenet_v2/mobilenet_v2_imagenet.weights.h5"
MOBILENET_TFLITE = SHARED / "models/mobilenet_v2/tf2_mobilenet_v2_1.0_224_ptq.tflite"
PHOTOS = SHARED / "photos"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Compiled LiteRT artifacts go to a per-run cache, shared by the session's subprocesses, never ~/.cache."""
    cache = tmp_path_factory.mktemp("imgclassify-cache")
    saved = os.environ.get("IMGCLASSIFY_CACHE")
    os.environ["IMGCLASSIFY_CACHE"] = str(cache)
    yield cache
    if saved is None:
        os.environ.pop("IMGCLASSIFY_CACHE", None)
    else:
        os.environ["IMGCLASSIFY_CACHE"] = saved


@pytest.fixture(scope="session")
def shared() -> Path:
    if not MOBILENET_H5.exists() or not PHOTOS.is_dir():
        pytest.fail(f"test data not found under {SHARED} (set SHARED_DIR): models/ and photos/ are required")
    return SHARED


@pytest.fixture
def photo_folder(tmp_path: Path, shared: Path) -> Path:
    """A writable folder with real photos under all/ (../shared is read-only in CI)."""
    root = tmp_path / "photos"
    (root / "all/pets").mkdir(parents=True)
    for name in ("cat.bmp", "cat_720p.jpg", "pets.jpg", "imprinting_dog_test_0.bmp", "parrot.jpg"):
        shutil.copy(shared / "photos/coral" / name, root / "all/pets" / name)
    for name in ("hot_dog.jpg", "grace_hopper.bmp"):
        shutil.copy(shared / "photos/coral" / name, root / "all" / name)
    shutil.copy(shared / "photos/skimage/chelsea.png", root / "all/chelsea.png")
    return root


@pytest.fixture
def fake_service() -> FakeApp:
    return fake_app()


@pytest.fixture(scope="session")
def emulators() -> Iterator[object]:
    from imgclassify.emulation import Emulators, environ

    emu = Emulators().start()
    try:
        with environ(emu.env):
            yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="session")
def litert_mobilenet(shared: Path, model_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The guarded LiteRT build of the real MobileNetV2 weights, compiled once for the whole run (by the function
    `imgclassify run` uses on first use) into the run's cache, where every CLI subprocess finds it. 110 photos:
    enough for the int8 kinds' guard (50 or more), a third of the time of all 309."""
    from common.domain.options import Model
    from imgclassify.litert_build import ensure_build

    photos = tmp_path_factory.mktemp("build-photos")
    for source in sorted((PHOTOS / "imagenet-dev").iterdir())[:110]:
        shutil.copy(source, photos / source.name)
    compiled: list[bool] = []
    artifact = ensure_build(Model.MOBILENET_V2, str(MOBILENET_H5), [photos], model_cache,
                            on_first_build=lambda: compiled.append(True))
    assert compiled == [True], "the run's cache must start empty: the build is part of what is tested"
    assert artifact is not None, "no LiteRT build of MobileNetV2 passed the accuracy guard"
    return artifact
