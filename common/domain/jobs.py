"""Jobs: what a job asks for, the job record, ids and object names. Plain data. Requests are validated in
common/domain/requests.py, the status view is common/domain/status.py."""
from __future__ import annotations

import hashlib
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from common.domain.callbacks import CallbackPolicy
from common.domain.options import MatchMode, choices

# Probability mass under a class's synset needed to match; tuned on ../shared/photos/imagenet-dev with
# bench/quality.py (see README, "Classification quality"). label/substring compare single labels: no threshold.
HIERARCHY_MIN_SCORE = 0.35
DEFAULT_MIN_SCORES = {MatchMode.HIERARCHY: HIERARCHY_MIN_SCORE, MatchMode.LABEL: 0.0, MatchMode.SUBSTRING: 0.0}
# The object detector's score needed for a class to match (its COCO classes); tuned on the dev photos with
# bench/detector_quality.py (docs/quality.md, "People, horses: the detector"). A job may set its own.
DETECTOR_MIN_SCORE = 0.65
DEFAULT_SOURCE_PREFIX = "all/"
MIN_EXAMPLES = 2  # per class taught by examples: its threshold is calibrated from their agreement
MAX_EXAMPLES = 200  # per class: beyond this, more examples add cost, not accuracy
# An example folder is read for its photos only: files named otherwise are skipped unread while it is listed (the
# extensions of the formats decoding accepts), at most MAX_EXAMPLES_LISTED names are looked at and at most
# MAX_EXAMPLE_READS photos read for the MAX_EXAMPLES that decode.
PHOTO_EXTENSIONS = frozenset({"jpg", "jpeg", "jpe", "jfif", "png", "gif", "bmp", "dib", "tif", "tiff", "webp", "heic",
                              "heif", "hif", "ppm", "pgm", "pbm", "pnm", "mpo"})
MAX_EXAMPLES_LISTED = 50_000
MAX_EXAMPLE_READS = 2 * MAX_EXAMPLES
# How long Pub/Sub waits for a delivery to be acknowledged before delivering it again: classify-image's ack deadline,
# which common/infrastructure.py gives the deployed and the emulated stack alike. A job's images without a result
# are re-published at most once per this interval: until it has passed, a message published earlier may still be in
# someone's hands.
DELIVERY_DEADLINE_SECONDS = 300
STATE_DIR = ".imgclassify"  # a folder's own state (embedded): jobs, predictions, logs, the writer's lock
MAX_CLASS_NAME_LENGTH = 64
MAX_TOP_K = 20
MAX_REQUEST_ID_LENGTH = 128
MAX_CALLBACK_URL_LENGTH = 2048
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class JobSpec:
    """What the user asked for."""

    classes: tuple[str, ...]
    bucket: str
    source_prefix: str = DEFAULT_SOURCE_PREFIX
    top_k: int = 5
    min_score: float = HIERARCHY_MIN_SCORE
    match: MatchMode = MatchMode.HIERARCHY
    dry_run: bool = False  # the whole job, results and counts, with no copy made
    watch: bool = False  # also sort every object that lands under the prefix later, until the job is closed
    callback_url: str = ""  # POSTed the final status once the job completes
    detector_min_score: float = DETECTOR_MIN_SCORE
    # Classes taught by example photos: (class as typed, where its examples are: a prefix in the bucket).
    examples: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "match", MatchMode(self.match))  # accept the plain string too

    @property
    def taught(self) -> frozenset[str]:
        """The classes that have example photos."""
        return frozenset(name for name, _ in self.examples)

    def to_dict(self) -> dict[str, Any]:
        data = {"classes": list(self.classes), "bucket": self.bucket, "source_prefix": self.source_prefix,
                "top_k": self.top_k, "min_score": self.min_score, "match": self.match.value}
        # Absent when unset: messages and records of plain jobs are as they always were.
        if self.dry_run:
            data["dry_run"] = True
        if self.watch:
            data["watch"] = True
        if self.callback_url:
            data["callback_url"] = self.callback_url
        if self.detector_min_score != DETECTOR_MIN_SCORE:
            data["detector_min_score"] = self.detector_min_score
        if self.examples:
            data["examples"] = dict(self.examples)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        """The spec as to_dict wrote it (a job record, a message). Raises ValueError naming what is wrong: a
        message is untrusted input, and a record written by another version is checked as strictly."""
        if not isinstance(data, Mapping):
            raise ValueError("a job spec must be an object")
        try:
            classes, bucket, prefix = data["classes"], data["bucket"], data["source_prefix"]
            top_k, min_score = data["top_k"], data["min_score"]
        except KeyError as exc:
            raise ValueError(f"a job spec needs {exc}") from None
        match = data.get("match", MatchMode.HIERARCHY.value)
        dry_run, watch, callback_url = data.get("dry_run", False), data.get("watch", False), \
            data.get("callback_url", "")
        detector_min_score = data.get("detector_min_score", DETECTOR_MIN_SCORE)
        examples = data.get("examples", {})
        wrong = [name for name, ok in (
            ("classes", isinstance(classes, list) and all(isinstance(c, str) and c for c in classes)),
            ("bucket", isinstance(bucket, str)), ("source_prefix", isinstance(prefix, str)),
            ("top_k", isinstance(top_k, int) and not isinstance(top_k, bool) and top_k > 0),
            ("min_score", isinstance(min_score, (int, float)) and not isinstance(min_score, bool)
             and math.isfinite(min_score)),
            ("match", isinstance(match, str) and match in choices(MatchMode)),
            ("dry_run", isinstance(dry_run, bool)), ("watch", isinstance(watch, bool)),
            ("callback_url", isinstance(callback_url, str)),
            ("detector_min_score", isinstance(detector_min_score, (int, float)) and
             not isinstance(detector_min_score, bool) and math.isfinite(detector_min_score)),
            ("examples", isinstance(examples, Mapping) and all(isinstance(k, str) and isinstance(v, str)
                                                             for k, v in examples.items()))) if not ok]
        if wrong:
            raise ValueError(f"a job spec's {', '.join(wrong)} has the wrong type")
        return cls(classes=tuple(classes), bucket=bucket, source_prefix=prefix, top_k=top_k,
                   min_score=float(min_score), match=MatchMode(match), dry_run=dry_run, watch=watch,
                   callback_url=callback_url, detector_min_score=float(detector_min_score),
                   examples=tuple(examples.items()))


@dataclass(frozen=True)
class JobDefaults:
    """What a request that leaves a field out gets (from the deployment's settings)."""

    bucket: str
    top_k: int = 5
    min_score: float | None = None  # None: the tuned default of the job's match mode
    max_classes: int = 32
    callbacks: CallbackPolicy = CallbackPolicy()  # where callback_url may point
    detector_min_score: float = DETECTOR_MIN_SCORE
    match: MatchMode = MatchMode.HIERARCHY  # DEFAULT_MATCH: old clients, which send none, may get the old rule


@dataclass(frozen=True)
class JobRequest:
    """A validated create-job request: the spec, and the client's idempotency key if it sent one."""

    spec: JobSpec
    request_id: str | None = None


@dataclass(frozen=True)
class JobRecord:
    id: str
    spec: JobSpec
    number_of_files: int | None  # None while create_job is still listing (it publishes as it lists)
    created_at: str
    request_id: str | None = None
    error: str | None = None  # why the job cannot finish (fan-out interrupted), until a retry resumes it
    errors: tuple[str, ...] = ()  # what stops its images (an instance that cannot load its model), as reported
    closed: bool = False  # a watch job stops taking arrivals once closed
    callback: dict[str, Any] | None = None  # how the completion callback went (status, attempts, error)
    republished_at: str | None = None  # when its images without a result were last re-published (a retry)
    # The key its fan-out messages are signed with (messages.signature): a message nobody with the job's record
    # signed — forged by a publisher to the topic, or naming an object the job never listed — is not counted.
    # "" for jobs recorded before messages were signed (their messages are checked as before).
    message_key: str = ""


def is_photo_name(name: str) -> bool:
    """Named like a photo (its extension, any case): what an example folder is read for."""
    filename = name.rpartition("/")[2]
    return "." in filename.lstrip(".") and filename.rpartition(".")[2].casefold() in PHOTO_EXTENSIONS


def republish_window(now: str) -> str:
    """The time (ISO, as job records keep it) after which a recorded re-publish still holds at `now`."""
    return (datetime.fromisoformat(now) - timedelta(seconds=DELIVERY_DEADLINE_SECONDS)).astimezone(UTC).isoformat(
        timespec="milliseconds")


def next_republish(republished_at: str, now: str) -> tuple[str, int]:
    """When a job re-published at `republished_at` may be re-published again: (ISO time, whole seconds from now)."""
    allowed = datetime.fromisoformat(republished_at) + timedelta(seconds=DELIVERY_DEADLINE_SECONDS)
    wait = math.ceil((allowed - datetime.fromisoformat(now)).total_seconds())
    return allowed.astimezone(UTC).isoformat(timespec="milliseconds"), max(1, wait)


def new_job_id(request_id: str | None = None) -> str:
    """Random, or derived from the client's request_id so that a retried request finds the job it started."""
    if request_id is None:
        return uuid.uuid4().hex
    return hashlib.sha256(f"request_id:{request_id}".encode("utf-8")).hexdigest()[:32]


MIN_JOB_ID_PREFIX = 4
_JOB_ID_PREFIX = re.compile(r"^[0-9a-f]{%d,31}$" % MIN_JOB_ID_PREFIX)


def is_job_id(text: object) -> bool:
    return isinstance(text, str) and bool(_JOB_ID.fullmatch(text))


def is_job_id_prefix(text: object) -> bool:
    """A shortened id, as git shortens commits (the report's file name carries the first 8)."""
    return isinstance(text, str) and bool(_JOB_ID_PREFIX.fullmatch(text))


def is_plain_object_name(name: str) -> bool:
    """A name as listings produce them: no '.', '..' or empty segment and no NUL, so it means the same object in
    a bucket, on a disk and after any URL decoding."""
    return bool(name) and "\x00" not in name and \
        all(part not in ("", ".", "..") for part in name.split("/"))


def shard_for(object_name: str, shards: int) -> int:
    digest = hashlib.blake2b(object_name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def result_key(object_name: str) -> str:
    """A document-id-safe key for an object name (names may hold '/', which Firestore ids may not)."""
    return hashlib.sha256(object_name.encode("utf-8")).hexdigest()


def target_name(class_name: str, object_name: str, source_prefix: str) -> str:
    relative = object_name[len(source_prefix):] if object_name.startswith(source_prefix) else object_name
    return f"{class_name}/{relative}"


MAX_NAME_COLLISIONS = 100
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # a photo; anything larger (a video, a disk image) is refused before reading


def collision_names(target: str) -> list[str]:
    """Where a copy may go, in order: the target itself, then "name (1).ext", "name (2).ext", ... A copy never
    replaces a file it did not write: the first candidate that is free, or already holds the same bytes, is used."""
    folder, _, filename = target.rpartition("/")
    stem, dot, extension = filename.rpartition(".") if "." in filename.lstrip(".") else (filename, "", "")
    prefix = f"{folder}/" if folder else ""
    return [target] + [f"{prefix}{stem} ({n}){dot}{extension}" for n in range(1, MAX_NAME_COLLISIONS)]


