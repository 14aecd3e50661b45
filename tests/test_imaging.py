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
