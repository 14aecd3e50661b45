"""Job accounting: what a job asks for, what it has done, and how that is reported. Plain data, no I/O."""
from __future__ import annotations

import hashlib
import math
import re
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from common.errors import InvalidRequest

MATCH_MODES = ("hierarchy", "label", "substring")
# Probability mass under a class's synset needed to match; tuned on ../shared/photos/imagenet-dev with
# bench/quality.py (see README, "Classification quality"). label/substring compare single labels: no threshold.
HIERARCHY_MIN_SCORE = 0.35
DEFAULT_MIN_SCORES = {"hierarchy": HIERARCHY_MIN_SCORE, "label": 0.0, "substring": 0.0}
DEFAULT_SOURCE_PREFIX = "all/"
MAX_CLASS_NAME_LENGTH = 64
MAX_TOP_K = 20
ALLOWED_FIELDS = frozenset({"classes", "bucket", "source_prefix", "top_k", "min_score", "match"})
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class JobSpec:
    """What the user asked for."""

    classes: tuple[str, ...]
    bucket: str
    source_prefix: str = DEFAULT_SOURCE_PREFIX
    top_k: int = 5
    min_score: float = HIERARCHY_MIN_SCORE
    match: str = "hierarchy"

    def to_dict(self) -> dict[str, Any]:
        return {"classes": list(self.classes), "bucket": self.bucket, "source_prefix": self.source_prefix,
                "top_k": self.top_k, "min_score": self.min_score, "match": self.match}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobSpec:
        return cls(classes=tuple(data["classes"]), bucket=str(data["bucket"]),
                   source_prefix=str(data["source_prefix"]), top_k=int(data["top_k"]),
                   min_score=float(data["min_score"]), match=str(data.get("match", "hierarchy")))


@dataclass(frozen=True)
class JobRecord:
    id: str
    spec: JobSpec
    number_of_files: int | None  # None while create_job is still listing (it publishes as it lists)
    created_at: str


@dataclass(frozen=True)
class Label:
    index: int
    name: str
    score: float


@dataclass(frozen=True)
class ImageResult:
    """The outcome for one image of one job; recorded exactly once."""

    name: str
    ok: bool
    matched: tuple[str, ...] = ()
    labels: tuple[Label, ...] = ()
    reason: str = ""
    scores: dict[str, float] = field(default_factory=dict)  # per requested class, in hierarchy mode

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "matched": list(self.matched), "reason": self.reason,
                "scores": {k: round(v, 6) for k, v in self.scores.items()},
                "labels": [{"index": l.index, "name": l.name, "score": round(l.score, 6)} for l in self.labels]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageResult:
        return cls(name=data["name"], ok=bool(data["ok"]), matched=tuple(data.get("matched", ())),
                   reason=data.get("reason", ""), scores=dict(data.get("scores", {})),
                   labels=tuple(Label(int(l["index"]), str(l["name"]), float(l["score"]))
                                for l in data.get("labels", ())))


@dataclass
class Counters:
    processed: int = 0
    failed: int = 0
    matches: dict[str, int] = field(default_factory=dict)
    unmatched: int = 0  # classified, but matched none of the job's classes

    @classmethod
    def of(cls, result: ImageResult) -> Counters:
        return cls(processed=int(result.ok), failed=int(not result.ok), matches={m: 1 for m in result.matched},
                   unmatched=int(result.ok and not result.matched))

    def add(self, other: Counters) -> None:
        self.processed += other.processed
        self.failed += other.failed
        self.unmatched += other.unmatched
        for name, count in other.matches.items():
            self.matches[name] = self.matches.get(name, 0) + count


def new_job_id() -> str:
    return uuid.uuid4().hex


def check_job_id(job_id: str) -> str:
    """Job ids are uuid4 hex; anything else cannot name a job, so it is rejected before any lookup."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise InvalidRequest("job id must be 32 lowercase hex characters", field="id")
    return job_id


def shard_for(object_name: str, shards: int) -> int:
    digest = hashlib.blake2b(object_name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def result_key(object_name: str) -> str:
    """A document-id-safe key for an object name (names may hold '/', which Firestore ids may not)."""
    return hashlib.sha256(object_name.encode("utf-8")).hexdigest()


def target_name(class_name: str, object_name: str, source_prefix: str) -> str:
    relative = object_name[len(source_prefix):] if object_name.startswith(source_prefix) else object_name
    return f"{class_name}/{relative}"


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
    if any(part in ("..", ".") for part in raw.split("/")):
        raise InvalidRequest("source_prefix may not contain '.' or '..' segments", field="source_prefix")
    return raw if raw.endswith("/") else raw + "/"


def parse_job_request(body: object, *, default_bucket: str, default_top_k: int,
                      default_min_score: float | None, max_classes: int) -> JobSpec:
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
    if len(raw_classes) > max_classes:
        raise InvalidRequest(f"at most {max_classes} classes per job", field="classes")
    classes: list[str] = []
    seen: set[str] = set()
    for position, raw in enumerate(raw_classes):
        name = validate_class_name(raw, position)
        if name.casefold() not in seen:
            seen.add(name.casefold())
            classes.append(name)

    bucket = body.get("bucket", default_bucket)
    if not isinstance(bucket, str) or not _BUCKET_NAME.match(bucket) or ".." in bucket:
        raise InvalidRequest("bucket must be a valid bucket name", field="bucket")

    source_prefix = _validate_prefix(body.get("source_prefix", DEFAULT_SOURCE_PREFIX))
    for position, name in enumerate(classes):
        folder = f"{name}/".casefold()
        if folder.startswith(source_prefix.casefold()) or source_prefix.casefold().startswith(folder):
            # Copies would land among the photos being sorted (and be sorted again by the next job).
            raise InvalidRequest(f"classes[{position}] {name!r} would put copies inside source_prefix "
                                 f"{source_prefix!r}", field="classes")

    top_k = body.get("top_k", default_top_k)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise InvalidRequest(f"top_k must be an integer from 1 to {MAX_TOP_K}", field="top_k")

    match = body.get("match", "hierarchy")
    if match not in MATCH_MODES:
        raise InvalidRequest(f"match must be one of {', '.join(MATCH_MODES)}", field="match")

    fallback = default_min_score if default_min_score is not None and match == "hierarchy" else \
        DEFAULT_MIN_SCORES[match]
    min_score = body.get("min_score", fallback)
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not math.isfinite(min_score) \
            or not 0.0 <= min_score <= 1.0:
        raise InvalidRequest("min_score must be a number from 0 to 1", field="min_score")

    return JobSpec(classes=tuple(classes), bucket=bucket, source_prefix=source_prefix, top_k=top_k,
                   min_score=float(min_score), match=match)


def status_view(job: JobRecord, counters: Counters, status_url: str | None = None) -> dict[str, Any]:
    """The job_status body: the old service's fields first, then the richer ones."""
    done = counters.processed + counters.failed
    listing = job.number_of_files is None
    total = done if job.number_of_files is None else job.number_of_files
    complete = not listing and done >= total
    percentage = 0 if listing else 100 if total == 0 else min(100, (100 * done) // total)
    view: dict[str, Any] = {
        "code": 200,
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
        "state": "listing" if listing else "complete" if complete else "running",
        "created_at": job.created_at,
        "bucket": job.spec.bucket,
        "source_prefix": job.spec.source_prefix,
        "top_k": job.spec.top_k,
        "min_score": job.spec.min_score,
        "match": job.spec.match,
    }
    if status_url:
        view["status_url"] = status_url
    return view
