"""Issue 28, bounded work: what one request or one message may make the service do. Full-size previews within the
decode budget; retries that re-publish an image at most once per delivery deadline; example folders that count
photos, not files; dead letters that count only what the job published (docs/reliability.md, "Threat model:
bounded work"). Heavier measurements are in bench/decode_memory.py."""
from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest
from PIL import Image

from common.domain.errors import InvalidRequest
from common.inference import decoding
from common.inference.thumbnails import FULL_SIZE, THUMBNAIL_SIZE, make_full_photo, make_thumbnail
from tests.fakes import fake_app, served, solid_jpeg


def _encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, format=fmt, **options)
    return out.getvalue()


def _gradient(width: int, height: int) -> np.ndarray:
    """A photo-like RGB picture, quick to make and to compress."""
    ramp = np.add.outer(np.arange(height, dtype=np.uint32) * 255 // height, np.arange(width, dtype=np.uint32) *
                        255 // width).astype(np.uint8)
    return np.stack([ramp, ramp[::-1], ramp[:, ::-1]], axis=2)


# --- 1. Full-size previews: reduced while decoding, within the budget ---------------------------------------------
@pytest.fixture(scope="module")
def progressive_24mp() -> bytes:
    return _encoded(Image.fromarray(_gradient(6000, 4000)), "JPEG", quality=80, progressive=True)


def test_a_24_megapixel_progressive_jpeg_gets_its_full_photo_reduced_and_encoded_again(progressive_24mp):
    full = make_full_photo(progressive_24mp)
    shown = Image.open(io.BytesIO(full))
    assert shown.format == "JPEG" and shown.size == (FULL_SIZE, round(FULL_SIZE * 4000 / 6000))
    assert full != progressive_24mp
    image = Image.open(io.BytesIO(progressive_24mp))
    _, estimate, _ = decoding._opened(progressive_24mp, FULL_SIZE, preview=True)
    assert image.info.get("progressive") and estimate <= decoding.MAX_DECODED_BYTES  # decoded at half size


@pytest.mark.parametrize("mode", ["I;16", "F", "RGBA", "LA", "P", "CMYK", "1", "I"])
def test_every_mode_gives_an_rgb_full_photo_at_most_full_size_keeping_its_picture(mode):
    base = Image.new("RGB", (2600, 1700), (200, 40, 40))
    base.paste((40, 40, 200), (1300, 0, 2600, 1700))
    image = base.convert("L" if mode in ("I;16", "F", "1", "I") else mode)
    if mode in ("I;16", "F", "I"):
        dtype = {"I;16": np.uint16, "F": np.float32, "I": np.int32}[mode]
        image = Image.fromarray(np.asarray(image).astype(dtype) * 200)
    shown = Image.open(io.BytesIO(make_full_photo(_encoded(image, "TIFF" if mode in ("I;16", "F", "I", "CMYK")
                                                           else "PNG"))))
    assert shown.mode == "RGB" and max(shown.size) == FULL_SIZE
    pixels = np.asarray(shown, dtype=int)
    left, right = pixels[:, :100].mean(axis=(0, 1)), pixels[:, -100:].mean(axis=(0, 1))
    assert np.abs(left - right).sum() > 60  # the two halves are still told apart


def test_a_full_photo_over_the_budget_is_refused_naming_size_and_why_its_thumbnail_still_shown(monkeypatch):
    data = _encoded(Image.fromarray((_gradient(3000, 2000)[:, :, 0].astype(np.uint16) * 257)), "PNG")
    monkeypatch.setattr(decoding, "MAX_DECODED_BYTES", 13 * 2**20)  # 3000x2000 16-bit: 11 MB, 20 MB at 2048 px
    with pytest.raises(InvalidRequest) as refused:
        make_full_photo(data)
    assert refused.value.field == "size"
    assert "3000x2000 pixels (I;16)" in refused.value.message and "above the 13 MB budget" in refused.value.message
    assert Image.open(io.BytesIO(make_thumbnail(data))).size == (THUMBNAIL_SIZE, round(THUMBNAIL_SIZE * 2 / 3))


def test_every_preview_plan_fits_the_budget_or_is_refused_before_decoding():
    """The estimate covers each phase: a plan within the budget is chosen whenever one exists."""
    for mode, side in (("I;16", 6320), ("F", 6320), ("F", 6000), ("RGB", 6320), ("RGBA", 4000), ("P", 6320),
                       ("RGBA", 6320), ("L", 9000)):
        image = Image.new(mode, (1, 1))
        image._size = (side, side * 3 // 4)  # a header's claim: nothing is allocated
        factor, held = decoding.preview_plan(image, FULL_SIZE, image.size)
        fits = held <= decoding.MAX_DECODED_BYTES
        assert fits or factor == -(-side // FULL_SIZE), (mode, side)
        assert held >= decoding.decoded_bytes(image), (mode, side)  # never below what the decode itself holds


def test_large_previews_are_made_one_at_a_time_from_decode_to_rgb(monkeypatch):
    data = _encoded(Image.fromarray(_gradient(2600, 2600)[:, :, 0].astype(np.uint16) * 257), "PNG")
    assert decoding._opened(data, FULL_SIZE, preview=True)[1] >= decoding.LARGE_DECODE_BYTES
    active, most = [0], [0]
    lock = threading.Lock()
    convert = decoding._to_rgb

    def counted(image: Image.Image) -> Image.Image:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.05)
        try:
            return convert(image)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(decoding, "_to_rgb", counted)
    threads = [threading.Thread(target=make_full_photo, args=(data,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == [1]


def test_a_served_full_photo_that_cannot_be_made_is_a_json_400_never_a_500(monkeypatch):
    app = fake_app()
    app.objects.write("images", "all/cat.jpg", solid_jpeg("red"))
    app.objects.write("images", "all/junk.jpg", b"not a photo at all")
    client = served(app)
    job = client.post("/classification-job", json={"classes": ["tabby"]}).get_json()
    for message in app.publisher.messages:
        app.classify_image(message)
    base = f"/classification-job/{job['id']}/thumbnail"
    shown = client.get(base, query_string={"name": "all/cat.jpg", "size": "full"})
    assert shown.status_code == 200 and shown.headers["Content-Type"] == "image/jpeg"
    refused = client.get(base, query_string={"name": "all/junk.jpg", "size": "full"})
    assert refused.status_code == 400 and refused.is_json
    assert refused.get_json()["field"] == "size" and "not a recognised image format" in refused.get_json()["message"]
