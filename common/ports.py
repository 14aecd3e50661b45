"""The I/O the use cases need, as small interfaces split by who uses them. Each has a GCP adapter and a local adapter
(common/adapters/), and tests/test_contract.py runs one suite against fakes and both adapters.

Adapters translate their failures at this boundary: what may pass on retry becomes `TransientError`, what an
operator must fix becomes `ConfigurationError`; the use cases never see an SDK's exception types.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from common.domain.jobs import JobRecord
from common.domain.messages import ClassifyMessage
from common.domain.results import Counters, ImageResult

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Copied:
    """Where a copy is (`name`), whether this call wrote it (False: it was already there), and, when it did, the
    identity of what it wrote (a file's device, inode and change time; an object's generation): removal later
    needs the same identity, so a file put at that path since — even with the same bytes — is never removed."""

    name: str
    written: bool
    identity: str = field(default="", compare=False)  # not part of what the outcome is


class Removal(StrEnum):
    """What removing a job's copy did: only a file still holding what the job wrote is removed."""

    REMOVED = "removed"
    MISSING = "missing"  # already gone
    CHANGED = "changed"  # holds other bytes now (the user's): kept
    UNSAFE = "unsafe"  # a folder on its path is now a link (or not a folder): nothing removed through it


@dataclass(frozen=True)
class Listed:
    """An object found by a listing, with its content fingerprint when the listing gives one for free (GCS md5)."""

    name: str
    content: str | None = None


# --- objects ----------------------------------------------------------------------------------------------------
class ObjectLister(Protocol):
    def list_names(self, bucket: str, prefix: str) -> Iterator[str]:
        """Every object name under prefix, any count (paginated underneath), excluding 'directory' markers."""
        ...

    def list_objects(self, bucket: str, prefix: str) -> Iterator[Listed]:
        """list_names, with content fingerprints where the store has them without reading the objects."""
        ...


class ObjectReader(Protocol):
    def read(self, bucket: str, name: str) -> bytes:
        """Raises ObjectMissing when the object does not exist, PermanentImageError when it can never be read."""
        ...

    def exists(self, bucket: str, name: str) -> bool:
        """Whether a regular object (a file, not through a link) is there."""
        ...


class ObjectStore(ObjectLister, ObjectReader, Protocol):
    def copy(self, bucket: str, source: str, target: str, content: str | None = None) -> Copied:
        """Copy source to target, never replacing anything: when target holds other bytes (a user's file, another
        job's copy) the copy goes to the next of `collision_names(target)`. Idempotent: a candidate already holding
        the same bytes is reused, not written again, so a redelivered message makes no second copy. Raises
        ObjectMissing if source is gone, PermanentImageError if the target cannot be written (not a folder, a link,
        no permission). `content`, the source's fingerprint when the caller knows it, saves a metadata read."""
        ...

    def write(self, bucket: str, name: str, data: bytes) -> None: ...

    def remove(self, bucket: str, name: str, content: str, identity: str = "") -> Removal:
        """Delete name only if it still holds `content` (a content fingerprint) and, when given, is still the very
        file or object written (`Copied.identity`), never through a link at any component of its path. Folders a
        removal leaves empty go too (on a disk; a bucket has none)."""
        ...


# --- jobs: each use case gets the parts it uses ------------------------------------------------------------------
class JobReader(Protocol):
    def get_job(self, job_id: str) -> JobRecord | None: ...

    def counters(self, job_id: str) -> Counters: ...

    def result(self, job_id: str, name: str) -> ImageResult | None:
        """The job's result for one object (one lookup by key), None when it has none."""
        ...

    def results(self, job_id: str) -> Iterator[ImageResult]: ...

    def job_ids_with_prefix(self, prefix: str, limit: int) -> list[str]:
        """At most `limit` ids of jobs starting with prefix (a shortened id), in id order."""
        ...

    def undone_at(self, job_id: str) -> str | None:
        """When the job was (first) undone; None while it was not (one keyed read)."""
        ...


class JobRecorder(JobReader, Protocol):
    """Creating jobs and fanning them out."""

    def create_job(self, job: JobRecord) -> bool:
        """Record a new job; False (nothing changed) when a job with this id already exists."""
        ...

    def set_total(self, job_id: str, number_of_files: int) -> None:
        """Record how many images the job has, once listing is done (and clear any error)."""
        ...

    def mark_failed(self, job_id: str, reason: str) -> None:
        """Say why the job cannot finish (its fan-out was interrupted)."""
        ...

    def claim_republish(self, job_id: str, at: str, since: str) -> bool:
        """Record `at` as when the job's images without a result were re-published (its `republished_at`), unless
        one was recorded after `since` (ISO times in UTC, as job records keep them), atomically: True for the one
        caller that may re-publish now, False (nothing changed) otherwise or when there is no such job."""
        ...

    def register_arrival(self, job_id: str, name: str) -> bool:
        """A watch job's object, listed or announced: counted once (True) however often it is seen."""
        ...


class Arrivals(JobReader, Protocol):
    """Watch jobs: what arrives joins them, until they are closed."""

    def register_arrival(self, job_id: str, name: str) -> bool: ...

    def close_job(self, job_id: str) -> None:
        """A watch job takes no more arrivals."""
        ...

    def watch_jobs(self, bucket: str) -> list[JobRecord]:
        """The watch jobs on this bucket that are still open."""
        ...


class ResultRecorder(Protocol):
    def record_result(self, job_id: str, result: ImageResult) -> bool:
        """Store the result and count it, atomically and once: False (and nothing changed) if already recorded."""
        ...

    def record_job_error(self, job_id: str, message: str) -> None:
        """Note on the job what stops its images (each distinct message once), for its status to show."""
        ...

    def on_counted(self, announce: Callable[[str], object]) -> bool:
        """Whether this store checks completions itself, calling `announce` after each of its batched commits
        (True: Firestore's shards); False: whoever records a result announces after it."""
        ...


class CopyManifest(JobReader, Protocol):
    """Which copies a job owns: changed only by compare-and-set, so that concurrent corrections, undo and
    redeliveries never lose a copy from the manifest or bring one back. A job owns a copy it wrote until the copy is
    released (undone or corrected away); an undone job owns nothing and takes nothing new."""

    def claim_copy(self, job_id: str, name: str, copy: str, written: bool, identity: str = "") -> bool:
        """Add copy to the photo's copies (and to what the job owns when this job wrote it), atomically; False, and
        nothing changed, when the job is undone or has no result for the photo."""
        ...

    def release_copy(self, job_id: str, name: str, copy: str) -> bool:
        """Take copy out of the photo's copies and out of what the job owns, atomically; True only for the one
        caller that took it out of what the job owned: that caller alone may remove the file."""
        ...

    def record_undo(self, job_id: str, at: str) -> bool:
        """Mark the job undone (from now on it takes no copy); the first time wins: False when it was already."""
        ...


class JobCallbacks(Protocol):
    def record_callback(self, job_id: str, outcome: dict[str, object]) -> None:
        """How delivering the completion callback went (pending, delivered, failed and why)."""
        ...


class CompletionClaims(JobReader, JobCallbacks, Protocol):
    """Who announces a job's completion, once."""

    def done_count(self, job_id: str) -> int:
        """Images with a result counted (cheap: one aggregation, not every counter document)."""
        ...

    def claim_completion(self, job_id: str) -> bool:
        """True exactly once per job, for whoever announces its completion (a marker created once)."""
        ...


class JobListing(Protocol):
    def job_ids(self) -> list[str]:
        """Every job, oldest first."""
        ...

    def latest_job_id(self) -> str | None: ...

    def recent_job_ids(self, limit: int) -> list[str]:
        """The newest `limit` jobs, newest first."""
        ...


class UndoRecords(Protocol):
    """Which jobs were undone, and when (so "the latest job" of undo means the latest not undone yet)."""

    def undone_jobs(self) -> dict[str, str]:
        """job id -> when it was undone."""
        ...


class RetryableFailures(Protocol):
    """Failures that may pass on a later try (the disk was full, a file was still being written): the embedded
    runner forgets them so that the image is classified again. Only where such failures are recorded."""

    def forget_retryable_failures(self, job_id: str, names: Iterable[str] | None = None) -> list[str]:
        """Remove the job's retryable failures (all, or those of these names) and uncount them; their names."""
        ...


class JobStore(JobRecorder, Arrivals, ResultRecorder, CompletionClaims, CopyManifest, UndoRecords, JobListing,
               Protocol):
    """Everything a job store adapter provides."""


# --- messages, predictions, events, callbacks, the model ---------------------------------------------------------
class Publisher(Protocol):
    def publish_all(self, messages: Iterable[ClassifyMessage]) -> int:
        """Publish every message and wait until each is accepted; raises PublishError if any failed."""
        ...


class PredictionStore(Protocol):
    """What a model build said about a photo, by (model fingerprint, content fingerprint). An optimisation: the
    use cases treat its failures as misses."""

    def get(self, model: str, content: str) -> bytes | None: ...

    def get_many(self, model: str, contents: Sequence[str]) -> dict[str, bytes]:
        """The stored entries among contents (those missing are absent), in a few reads, not one per photo."""
        ...

    def put(self, model: str, content: str, prediction: bytes) -> None: ...


class Corrections(Protocol):
    """What people said a photo is or is not, per bucket (a folder) and class word (casefolded), by the photo's
    content fingerprint: later jobs there learn from it."""

    def record_correction(self, bucket: str, word: str, content: str, belongs: bool) -> None:
        """The latest word on (bucket, word, content) wins."""
        ...

    def corrections(self, bucket: str, word: str) -> dict[str, bool]:
        """content -> belongs, for this class word in this bucket."""
        ...

    def forget_correction(self, bucket: str, word: str, content: str) -> bool: ...

    def corrected_words(self, bucket: str) -> list[str]: ...


class EventPublisher(Protocol):
    def publish_event(self, event: dict[str, object]) -> None:
        """Announce a job event (its completion) on the job-events topic."""
        ...


class CallbackSender(Protocol):
    def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        """POST body to url, following no redirect; the HTTP status. Raises TransientError when no answer came
        within timeout, CallbackRefused when the URL (or where its host resolves) may not be reached."""
        ...


class BackgroundWork(Protocol):
    def submit(self, task: Callable[[], object]) -> bool:
        """Run task later, off the caller's path; False (and nothing queued) when too much is waiting."""
        ...

    def drain(self, timeout: float) -> bool:
        """Wait up to timeout seconds for what was submitted to finish; True if it did."""
        ...


class Detector(Protocol):
    description: str

    def detect(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (416, 416, 3) RGB -> float32 (80, 5): per COCO class, its best score and box."""
        ...


class Classifier(Protocol):
    description: str

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, 224, 224, 3) RGB -> float32 (N, 1000) ImageNet probabilities."""
        ...

    def predict_with_features(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(the probabilities, the penultimate features (N, 2048 or 1280), or None when this build has none)."""
        ...
