"""What the model said about one photo, stored so any later question about it is answered without the model.

The whole probability vector is kept (1000 float32, zlib-compressed, with a checksum): hierarchy scores sum
probabilities over a class's descendants, so anything less than the full vector could answer a broad class
differently from a fresh run. Keyed by the model build's fingerprint and the photo's content fingerprint.
"""
from __future__ import annotations

import base64
import hashlib
import struct
import zlib

import numpy as np

NUM_CLASSES = 1000
_HEADER = struct.Struct("<4sII")  # magic, count, crc32 of the raw vector
_MAGIC = b"IMP1"


class CorruptPrediction(ValueError):
    """A stored prediction that cannot be decoded (truncated, altered, another format): recompute it."""


def content_fingerprint(data: bytes) -> str:
    """A photo's content key: its MD5, as Cloud Storage lists it (md5Hash, base64), so a listing can key it."""
    return "md5:" + base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def encode_probabilities(probabilities: np.ndarray) -> bytes:
    raw = np.ascontiguousarray(probabilities, dtype="<f4").ravel().tobytes()
    return _HEADER.pack(_MAGIC, len(raw) // 4, zlib.crc32(raw)) + zlib.compress(raw, 6)


def decode_vector(blob: bytes, expected: int) -> np.ndarray:
    """A stored vector of `expected` floats (the classifier's 1000, the detector's 400)."""
    try:
        magic, count, crc = _HEADER.unpack_from(blob)
        raw = zlib.decompress(blob[_HEADER.size:])
    except (struct.error, zlib.error, TypeError) as exc:
        raise CorruptPrediction(f"stored prediction unreadable: {exc}") from None
    if magic != _MAGIC or count != expected or len(raw) != 4 * count or zlib.crc32(raw) != crc:
        raise CorruptPrediction("stored prediction fails its checks (truncated, altered or another format)")
    return np.frombuffer(raw, dtype="<f4").astype(np.float32)
