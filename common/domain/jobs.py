"""Jobs: what a job asks for (validated from a request), the job record, and the status view. Plain data."""
from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from common.domain.callbacks import CallbackPolicy, url_refusal
from common.domain.errors import InvalidRequest
from common.domain.options import MatchMode, choices
from common.domain.results import Counters

# Probability mass under a class's synset needed to match; tuned on ../shared/photos/imagenet-dev with
# bench/quality.py (see README, "Classification quality"). label/substring compare single labels: no threshold.
HIERARCHY_MIN_SCORE = 0.35
DEFAULT_MIN_SCORES = {MatchMode.HIERARCHY: HIERARCHY_MIN_SCORE, MatchMode.LABEL: 0.0, MatchMode.SUBSTRING: 0.0}
DEFAULT_SOURCE_PREFIX = "all/"
MAX_CLASS_NAME_LENGTH = 64
MAX_TOP_K = 20
MAX_REQUEST_ID_LENGTH = 128
# create_job lists and publishes within its function timeout (540 s); a job still listing long after that was
# abandoned by an instance that died, and says so instead of looking busy forever.
LISTING_DEADLINE_SECONDS = 900
ALLOWED_FIELDS = frozenset({"classes", "bucket", "source_prefix", "top_k", "min_score", "match", "request_id",
                            "dry_run", "watch", "callback_url"})
MAX_CALLBACK_URL_LENGTH = 2048
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]+$")


class JobState(StrEnum):
    LISTING = "listing"  # create_job is still listing (and publishing) the images
    RUNNING = "running"
    WATCHING = "watching"  # an open watch job: more images may arrive
    STALLED = "stalled"  # its images hit an error an operator must fix (status says which)
    COMPLETE = "complete"
    FAILED = "failed"  # it cannot finish (status says why)

    @property
    def in_progress(self) -> bool:
        """Still changing: copies may yet be made, so it cannot be undone or treated as finished."""
        return self in (JobState.LISTING, JobState.RUNNING, JobState.WATCHING)


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

    def __post_init__(self) -> None:
        object.__setattr__(self, "match", MatchMode(self.match))  # accept the plain string too

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
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        return cls(classes=tuple(data["classes"]), bucket=str(data["bucket"]),
                   source_prefix=str(data["source_prefix"]), top_k=int(data["top_k"]),
                   min_score=float(data["min_score"]), match=MatchMode(data.get("match", "hierarchy")),
                   dry_run=bool(data.get("dry_run", False)), watch=bool(data.get("watch", False)),
                   callback_url=str(data.get("callback_url", "")))


@dataclass(frozen=True)
class JobDefaults:
    """What a request that leaves a field out gets (from the deployment's settings)."""

    bucket: str
    top_k: int = 5
    min_score: float | None = None  # None: the tuned default of the job's match mode
    max_classes: int = 32
    callbacks: CallbackPolicy = CallbackPolicy()  # where callback_url may point


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


def new_job_id(request_id: str | None = None) -> str:
    """Random, or derived from the client's request_id so that a retried request finds the job it started."""
    if request_id is None:
        return uuid.uuid4().hex
    return hashlib.sha256(f"request_id:{request_id}".encode("utf-8")).hexdigest()[:32]


def check_job_id(job_id: str) -> str:
    """Job ids are 32 hex characters; anything else cannot name a job, so it is rejected before any lookup."""
    if not isinstance(job_id, str) or not _JOB_ID.fullmatch(job_id):
        raise InvalidRequest("job id must be 32 lowercase hex characters", field="id")
    return job_id


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


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def validate_class_name(raw: object, position: int) -> str:
    where = f"classes[{position}]"
    if not isinstance(raw, str):
        raise InvalidRequest(f"{where} must be a string", field="classes")
    name = raw.strip()
    if not name:
        raise InvalidRequest(f"{where} is empty", field="classes")
    if len(name) > MAX_CLASS_NAME_LENGTH:
        raise InvalidRequest(f"{where} is longer than {MAX_CLASS_NAME_LENGTH} characters", field="classes")
    if _has_control(name):
        raise InvalidRequest(f"{where} contains a control character", field="classes")
    if "/" in name or "\\" in name or ".." in name or name.startswith("."):
        # Class names become bucket prefixes / folder names: nothing that could climb out or hide.
        raise InvalidRequest(f"{where} {name!r} may not contain '/', '\\', '..' or start with '.'",
                             field="classes")
    return name


def _validate_prefix(raw: object) -> str:
    if not isinstance(raw, str):
        raise InvalidRequest("source_prefix must be a string", field="source_prefix")
    if not raw or len(raw) > 512 or _has_control(raw) or raw.startswith("/") or "\\" in raw:
        raise InvalidRequest("source_prefix must be a relative prefix such as 'all/'", field="source_prefix")
    if any(part in ("..", ".") or part.startswith(".") for part in raw.split("/")):
        # Hidden folders hold the service's own state (DIR/.imgclassify/): never photos to sort.
        raise InvalidRequest("source_prefix may not contain '.' or '..' segments or hidden folders",
                             field="source_prefix")
    return raw if raw.endswith("/") else raw + "/"


def _validate_callback_url(raw: object, policy: CallbackPolicy) -> str:
    if raw == "":
        return ""
    if not isinstance(raw, str) or len(raw) > MAX_CALLBACK_URL_LENGTH or _has_control(raw) or " " in raw:
        raise InvalidRequest("callback_url must be an http(s) URL", field="callback_url")
    refusal = url_refusal(raw, policy)
    if refusal is not None:
        raise InvalidRequest(f"callback_url {refusal}", field="callback_url")
    return raw


def _validate_request_id(raw: object) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not 1 <= len(raw) <= MAX_REQUEST_ID_LENGTH or not _REQUEST_ID.fullmatch(raw):
        raise InvalidRequest(f"request_id must be 1 to {MAX_REQUEST_ID_LENGTH} characters of letters, digits "
                             "and . _ : -", field="request_id")
    return raw


def parse_job_request(body: object, defaults: JobDefaults) -> JobRequest:
    """Validate a create-job body. Raises InvalidRequest naming the offending field."""
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object", field="body")
    unknown = sorted(set(body) - ALLOWED_FIELDS)
    if unknown:
        raise InvalidRequest(f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(ALLOWED_FIELDS))}",
                             field=unknown[0])
    raw_classes = body.get("classes")
    if raw_classes is None:
        raise InvalidRequest("classes is required: a list of class names such as [\"dog\", \"truck\"]",
                             field="classes")
    if not isinstance(raw_classes, list):
        raise InvalidRequest("classes must be a list of strings", field="classes")
    if not raw_classes:
        raise InvalidRequest("classes must not be empty", field="classes")
    if len(raw_classes) > defaults.max_classes:
        raise InvalidRequest(f"at most {defaults.max_classes} classes per job", field="classes")
    classes: list[str] = []
    seen: set[str] = set()
    for position, raw in enumerate(raw_classes):
        name = validate_class_name(raw, position)
        if name.casefold() not in seen:
            seen.add(name.casefold())
            classes.append(name)

    bucket = body.get("bucket", defaults.bucket)
    if not isinstance(bucket, str) or not _BUCKET_NAME.match(bucket) or ".." in bucket:
        raise InvalidRequest("bucket must be a valid bucket name", field="bucket")

    source_prefix = _validate_prefix(body.get("source_prefix", DEFAULT_SOURCE_PREFIX))
    for position, name in enumerate(classes):
        folder = f"{name}/".casefold()
        if folder.startswith(source_prefix.casefold()) or source_prefix.casefold().startswith(folder):
            # Copies would land among the photos being sorted (and be sorted again by the next job).
            raise InvalidRequest(f"classes[{position}] {name!r} would put copies inside source_prefix "
                                 f"{source_prefix!r}", field="classes")

    top_k = body.get("top_k", defaults.top_k)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidRequest(f"top_k must be an integer from 1 to {MAX_TOP_K}", field="top_k")

    raw_match = body.get("match", MatchMode.HIERARCHY.value)
    if not isinstance(raw_match, str) or raw_match not in choices(MatchMode):
        raise InvalidRequest(f"match must be one of {', '.join(choices(MatchMode))}", field="match")
    match = MatchMode(raw_match)

    fallback = defaults.min_score if defaults.min_score is not None and match == MatchMode.HIERARCHY else \
        DEFAULT_MIN_SCORES[match]
    min_score = body.get("min_score", fallback)
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not math.isfinite(min_score) \
            or not 0.0 <= min_score <= 1.0:
        raise InvalidRequest("min_score must be a number from 0 to 1", field="min_score")

    dry_run, watch = body.get("dry_run", False), body.get("watch", False)
    for name, value in (("dry_run", dry_run), ("watch", watch)):
        if not isinstance(value, bool):
            raise InvalidRequest(f"{name} must be true or false", field=name)
    callback_url = _validate_callback_url(body.get("callback_url", ""), defaults.callbacks)

    spec = JobSpec(classes=tuple(classes), bucket=bucket, source_prefix=source_prefix, top_k=top_k,
                   min_score=float(min_score), match=match, dry_run=dry_run, watch=watch,
                   callback_url=callback_url)
    return JobRequest(spec, _validate_request_id(body.get("request_id")))


def _age_seconds(created_at: str, now: datetime) -> float:
    try:
        return (now - datetime.fromisoformat(created_at)).total_seconds()
    except ValueError:
        return 0.0


def status_view(job: JobRecord, counters: Counters, now: datetime | None = None) -> dict[str, Any]:
    """The job_status body: the old service's fields first, then the richer ones."""
    done = counters.processed + counters.failed
    listing = job.number_of_files is None
    if job.spec.watch:  # everything listed or announced so far, each object once
        total = max(counters.arrived, done)
    else:
        total = done if job.number_of_files is None else job.number_of_files
    watching = job.spec.watch and not job.closed
    complete = not listing and not watching and done >= total and job.error is None
    percentage = 0 if listing else 100 if complete else min(99, (100 * done) // total) if total else 0
    error = job.error
    if listing and error is None and _age_seconds(job.created_at, now or datetime.now(UTC)) > \
            LISTING_DEADLINE_SECONDS:
        error = (f"listing did not finish within {LISTING_DEADLINE_SECONDS} s (the instance stopped); "
                 "retry the request with the same request_id to resume it")
    state = JobState.FAILED if error else JobState.LISTING if listing else JobState.COMPLETE if complete else \
        JobState.STALLED if job.errors else JobState.WATCHING if watching else JobState.RUNNING
    view: dict[str, Any] = {
        "id": job.id,
        "classes": list(job.spec.classes),
        "complete": complete,
        "percentage": percentage,
        "number_of_files": total,
        "processed": counters.processed,
        "failed": counters.failed,
        "remaining": max(0, total - done),
        "matches": {name: counters.matches.get(name, 0) for name in job.spec.classes},
        "unmatched": counters.unmatched,
        "state": state,
        "created_at": job.created_at,
        "bucket": job.spec.bucket,
        "source_prefix": job.spec.source_prefix,
        "top_k": job.spec.top_k,
        "min_score": job.spec.min_score,
        "match": job.spec.match.value,
        "from_store": counters.from_store,
    }
    if job.spec.dry_run:
        view["dry_run"] = True
    if job.spec.watch:
        view["watch"] = True
    if job.spec.callback_url:
        view["callback_url"] = job.spec.callback_url
    if job.callback:
        view["callback"] = job.callback
    if counters.recomputed:
        view["predictions_recomputed"] = counters.recomputed
    if job.request_id is not None:
        view["request_id"] = job.request_id
    if error:
        view["error"] = error
    if job.errors:
        view["errors"] = list(job.errors)
    return view
