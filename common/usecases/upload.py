"""Copy every file of one store under a prefix of another (`emulate --upload`: a folder into the bucket)."""
from __future__ import annotations

from typing import Protocol

from common.ports import ObjectLister, ObjectReader, ObjectStore


class Source(ObjectLister, ObjectReader, Protocol):
    """Where the files come from: listed and read."""


class UploadFolder:
    def __init__(self, source: Source, target: ObjectStore) -> None:
        self._source = source
        self._target = target

    def __call__(self, bucket: str, prefix: str) -> int:
        """How many files were uploaded."""
        count = 0
        for name in self._source.list_names("", ""):
            self._target.write(bucket, prefix + name, self._source.read("", name))
            count += 1
        return count
