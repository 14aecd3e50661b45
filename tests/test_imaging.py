import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from common.domain.errors import PermanentImageError
from common.inference.decoding import decode_image


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


RGB = Image.new("RGB", (320, 240), (200, 30, 30))


@pytest.mark.parametrize("data", [
    encode(RGB, "JPEG"),
    encode(RGB.convert("CMYK"), "JPEG"),
    encode(RGB.convert("P"), "PNG"),
    encode(Image.new("I;16", (64, 64), 40000), "PNG"),
    encode(RGB, "WEBP"),
    encode(RGB, "GIF", save_all=True, append_images=[Image.new("RGB", (320, 240), (0, 0, 255))]),
    encode(Image.new("RGBA", (64, 64), (255, 0, 0, 128)), "PNG"),
])
def test_supported_formats_decode_to_model_input(data):
    pixels = decode_image(data)
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8


def test_exif_orientation_is_applied():
    tall = Image.new("RGB", (100, 200))
    tall.paste((255, 0, 0), (0, 0, 100, 100))  # red on top
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display: red ends up on the right
    pixels = decode_image(encode(tall, "JPEG", exif=exif))
    assert pixels[112, 200, 0] > 200 and pixels[112, 20, 0] < 60


def test_sixteen_bit_images_are_scaled_not_clipped():
    gradient = Image.fromarray(np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (64, 1)))
    assert gradient.mode == "I;16"
    pixels = decode_image(encode(gradient, "PNG"))
    assert pixels[:, 0].mean() < 10 and pixels[:, -1].mean() > 245


@pytest.mark.parametrize("data, reason", [
    (b"", "empty"),
    (b"hello, I am text pretending to be a jpeg", "not a recognised image"),
    (encode(RGB, "JPEG")[:300], "cannot decode"),
])
def test_poison_inputs_are_permanent_failures(data, reason):
    with pytest.raises(PermanentImageError, match=reason):
        decode_image(data)


def test_decompression_bomb_is_refused_from_its_header():
    # A valid PNG header declaring 100000 x 100000 pixels, without the pixels.
    small = encode(Image.new("L", (1, 1)), "PNG")
    ihdr = b"IHDR" + struct.pack(">II", 100000, 100000) + small[24:29]
    bomb = small[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + small[33:]
    with pytest.raises(PermanentImageError, match="pixels|bomb"):
        decode_image(bomb)


def test_iphone_heic_photos_are_read():
    assert decode_image(encode(RGB, "HEIF")).shape == (224, 224, 3)


def _with_png_size(width: int, height: int, mode: str = "RGBA") -> bytes:
    small = encode(Image.new(mode, (1, 1)), "PNG")
    ihdr = b"IHDR" + struct.pack(">II", width, height) + small[24:29]
    return small[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + small[33:]


def test_memory_is_bounded_formats_decoded_whole_get_a_smaller_pixel_budget():
    # 110 megapixels of RGBA PNG would decode into 440 MB (1.7 GB through Pillow's conversions): refused unread.
    with pytest.raises(PermanentImageError, match="budget per image"):
        decode_image(_with_png_size(10000, 11000))


def test_a_tiny_jpeg_declaring_a_huge_image_is_refused():
    small = bytearray(encode(RGB, "JPEG"))
    sof = small.index(b"\xff\xc0")
    small[sof + 5:sof + 9] = struct.pack(">HH", 11000, 10000)  # height, width in the frame header
    with pytest.raises(PermanentImageError, match="corrupt header or a decompression bomb"):
        decode_image(bytes(small))


def test_formats_outside_the_allow_list_are_never_parsed():
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(PermanentImageError, match="not a recognised image format"):
        decode_image(eps)


def test_litert_chatter_is_left_out_of_stderr_and_nothing_else_is(capfd, monkeypatch):
    import os
    import threading

    from common.inference.native import litert_chatter_filtered

    monkeypatch.setenv("LITERT_QUIET", "1")
    with litert_chatter_filtered():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
        other = threading.Thread(target=lambda: os.write(2, b"failed all/x.txt: not an image\n"))
        other.start()
        other.join()
        os.write(2, b"x" * 200_000 + b"\n")  # more than a pipe holds: nobody blocks
    assert capfd.readouterr().err == "failed all/x.txt: not an image\n" + "x" * 200_000 + "\n"
    monkeypatch.delenv("LITERT_QUIET")
    with litert_chatter_filtered():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    assert "XNNPACK" in capfd.readouterr().err  # --verbose: everything
