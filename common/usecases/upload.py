"""Copy every photo of one store under a prefix of another (`emulate --upload`: a folder into the bucket). Files
that are not photos by their name (a COPYRIGHT, a README, a .txt beside the photos) are left out and named, so
they do not turn into failed images of every job."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from common.ports import ObjectLister, ObjectReader, ObjectStore

# The formats the decoder accepts (common/inference/decoding.py: JPEG, PNG, GIF, BMP, TIFF, WebP, HEIF, PPM).
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif",
                  ".ppm", ".pgm", ".pbm", ".pnm")


class Source(ObjectLister, ObjectReader, Protocol):
    """Where the files come from: listed and read."""


@dataclass
class Uploaded:
    count: int = 0
    skipped: list[str] = field(default_factory=list)  # not photos by their name


class UploadFolder:
    def __init__(self, source: Source, target: ObjectStore) -> None:
        self._source = source
        self._target = target

    def __call__(self, bucket: str, prefix: str) -> Uploaded:
        done = Uploaded()
        for name in self._source.list_names("", ""):
            if not name.lower().endswith(PHOTO_SUFFIXES):
                done.skipped.append(name)
                continue
            self._target.write(bucket, prefix + name, self._source.read("", name))
            done.count += 1
        return done
