"""Hostile and awkward image files, each with the outcome the pipeline must reach."""
from __future__ import annotations

import io
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image


def _encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _bomb_png() -> bytes:
    small = _encode(Image.new("L", (1, 1)), "PNG")
    ihdr = b"IHDR" + struct.pack(">II", 100000, 100000) + small[24:29]
    return small[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + small[33:]


@lru_cache(maxsize=1)
def poison_files(photo: Path) -> dict[str, tuple[bytes, str]]:
    """name -> (bytes, "ok" | "failed")."""
    real = Image.open(photo).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    gradient = np.linspace(0, 255, 9000, dtype=np.uint8)[None, :, None].repeat(6700, axis=0).repeat(3, axis=2)
    sixty_mp = _encode(Image.fromarray(gradient), "JPEG", quality=70)
    full = _encode(real, "JPEG")
    return {
        "zero-bytes.jpg": (b"", "failed"),
        "text-named.jpg": (b"this is a text file, not a photo\n", "failed"),
        "truncated.jpg": (full[: len(full) // 3], "failed"),
        "bomb.png": (_bomb_png(), "failed"),
        "cmyk.jpg": (_encode(real.convert("CMYK"), "JPEG"), "ok"),
        "gray16.png": (_encode(Image.fromarray((np.asarray(real.convert("L"), dtype=np.uint16) * 257)), "PNG"), "ok"),
        "palette.png": (_encode(real.convert("P"), "PNG"), "ok"),
        "animated.gif": (_encode(real, "GIF", save_all=True, append_images=[real.rotate(90)]), "ok"),
        "photo.webp": (_encode(real, "WEBP"), "ok"),
        "exif-rotated.jpg": (_encode(real, "JPEG", exif=exif), "ok"),
        "sixty-megapixel.jpg": (sixty_mp, "ok"),
    }
