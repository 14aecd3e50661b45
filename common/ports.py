"""The three things the service does I/O with. Each has a GCP adapter and a local adapter (common/adapters/)."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Protocol

from common.jobs import Counters, ImageResult, JobRecord
from common.messages import ClassifyMessage


class ObjectStore(Protocol):
    def list_names(self, bucket: str, prefix: str) -> Iterator[str]:
        """Every object name under prefix, any count (paginated underneath), excluding 'directory' markers."""
        ...

    def read(self, bucket: str, name: str) -> bytes:
        """Raises ObjectMissing when the object does not exist."""
        ...

    def copy(self, bucket: str, source: str, target: str) -> bool:
        """Make target a copy of source. Idempotent: False (nothing written) when target already holds the same
        bytes, so a redelivered message makes no second copy. Raises ObjectMissing if source is gone."""
        ...

    def write(self, bucket: str, name: str, data: bytes) -> None: ...


class JobStore(Protocol):
    def create_job(self, job: JobRecord) -> None: ...

    def get_job(self, job_id: str) -> JobRecord | None: ...

    def set_total(self, job_id: str, number_of_files: int) -> None:
        """Record how many images the job has, once listing is done."""
        ...

    def has_result(self, job_id: str, name: str) -> bool: ...

    def record_result(self, job_id: str, result: ImageResult) -> bool:
        """Store the result and count it, atomically and once: False (and nothing changed) if already recorded."""
        ...

    def counters(self, job_id: str) -> Counters: ...

    def results(self, job_id: str) -> Iterator[ImageResult]: ...

    def latest_job_id(self) -> str | None: ...


class Publisher(Protocol):
    def publish_all(self, messages: Iterable[ClassifyMessage]) -> int:
        """Publish every message and wait until each is accepted; raises PublishError if any failed."""
        ...
