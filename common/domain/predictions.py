"""What the model said about one photo, stored so any later question about it is answered without the model.

The whole probability vector is kept (1000 float32, zlib-compressed, with a checksum), and the model's
penultimate features beside it when the model gives them (classes defined by examples are decided on those):
hierarchy scores sum probabilities over a class's descendants, so anything less than the full vector could answer
a broad class differently from a fresh run. Keyed by the model build's fingerprint and the photo's content fingerprint.
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
# With the penultimate features beside the probabilities (float16: they are compared by angle, three
# significant digits are plenty): one stored entry, one write, per photo.
_WITH_FEATURES = struct.Struct("<4sIII")  # magic, probabilities, features, crc32 of both raw vectors
_MAGIC_WITH_FEATURES = b"IMP2"


class CorruptPrediction(ValueError):
    """A stored prediction that cannot be decoded (truncated, altered, another format): recompute it."""


def content_fingerprint(data: bytes) -> str:
    """A photo's content key: its MD5, as Cloud Storage lists it (md5Hash, base64), so a listing can key it."""
    return "md5:" + base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode("ascii")


def encode_probabilities(probabilities: np.ndarray, features: np.ndarray | None = None) -> bytes:
    raw = np.ascontiguousarray(probabilities, dtype="<f4").ravel().tobytes()
    if features is None:
        return _HEADER.pack(_MAGIC, len(raw) // 4, zlib.crc32(raw)) + zlib.compress(raw, 6)
    raw_features = np.ascontiguousarray(features, dtype="<f2").ravel().tobytes()
    both = raw + raw_features
    return _WITH_FEATURES.pack(_MAGIC_WITH_FEATURES, len(raw) // 4, len(raw_features) // 2,
                               zlib.crc32(both)) + zlib.compress(both, 6)


def decode_stored(blob: bytes, expected: int) -> tuple[np.ndarray, np.ndarray | None]:
    """(a stored vector of `expected` floats — the classifier's 1000, the detector's 400 —, the features stored
    beside it, or None when the entry has none)."""
    try:
        magic = blob[:4]
        header = _WITH_FEATURES if magic == _MAGIC_WITH_FEATURES else _HEADER
        fields = header.unpack_from(blob)
        raw = zlib.decompress(blob[header.size:])
    except (struct.error, zlib.error, TypeError) as exc:
        raise CorruptPrediction(f"stored prediction unreadable: {exc}") from None
    count, features, crc = (fields[1], fields[2], fields[3]) if header is _WITH_FEATURES else \
        (fields[1], 0, fields[2])
    if magic not in (_MAGIC, _MAGIC_WITH_FEATURES) or count != expected or len(raw) != 4 * count + 2 * features \
            or zlib.crc32(raw) != crc:
        raise CorruptPrediction("stored prediction fails its checks (truncated, altered or another format)")
    vector = np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32)
    if header is not _WITH_FEATURES:
        return vector, None
    return vector, np.frombuffer(raw, dtype="<f2", offset=4 * count).astype(np.float32)


