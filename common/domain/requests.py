"""A create-job request: its fields (one schema, which openapi.yaml is checked against) and their validation.
Raises InvalidRequest naming the offending field."""
from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass, replace

from common.domain.callbacks import CallbackPolicy, url_refusal
from common.domain.errors import InvalidRequest
from common.domain.jobs import (DEFAULT_MIN_SCORES, DEFAULT_SOURCE_PREFIX, MAX_CALLBACK_URL_LENGTH,
                                MAX_CLASS_NAME_LENGTH, MAX_REQUEST_ID_LENGTH, MAX_TOP_K, JobDefaults, JobRequest,
                                JobSpec)
from common.domain.options import MatchMode, choices
from common.domain.taxonomy import is_word

_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]+$")


@dataclass(frozen=True)
class Field:
    """One request field as a JSON Schema property (what openapi.yaml must say of it)."""

    type: str
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    enum: tuple[str, ...] | None = None


REQUEST_FIELDS: dict[str, Field] = {
    "classes": Field("array"),
    "bucket": Field("string"),
    "source_prefix": Field("string"),
    "top_k": Field("integer", minimum=1, maximum=MAX_TOP_K),
    "min_score": Field("number", minimum=0, maximum=1),
    "match": Field("string", enum=tuple(choices(MatchMode))),
    "request_id": Field("string", max_length=MAX_REQUEST_ID_LENGTH),
    "dry_run": Field("boolean"),
    "watch": Field("boolean"),
    "callback_url": Field("string", max_length=MAX_CALLBACK_URL_LENGTH),
    "detector_min_score": Field("number", minimum=0, maximum=1),
    "examples": Field("object"),
}
REQUIRED_FIELDS = ("classes",)
ALLOWED_FIELDS = frozenset(REQUEST_FIELDS)
# What the old service's clients send: `{"classes": [...]}` and nothing else. Such a request is answered as they can
# use it: each class's folder named exactly as it was spelled, and a word no rule of ours knows sorted by the old rule.
OLD_CLIENT_FIELDS = frozenset(REQUIRED_FIELDS)


def is_old_client(body: dict[str, object]) -> bool:
    return set(body) <= OLD_CLIENT_FIELDS


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in text)


def validate_class_name(raw: object, position: int, as_spelled: bool = False) -> str:
    """A class name, stripped of surrounding blanks unless `as_spelled` (an old client's: its folder is looked
    for under exactly that name)."""
    where = f"classes[{position}]"
    if not isinstance(raw, str):
        raise InvalidRequest(f"{where} must be a string", field="classes")
    name = raw if as_spelled and raw.strip() else raw.strip()
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


def _validate_prefix(raw: object, field: str = "source_prefix", example: str = "all/") -> str:
    if not isinstance(raw, str):
        raise InvalidRequest(f"{field} must be a string", field=field.split(".")[0])
    if not raw or len(raw) > 512 or _has_control(raw) or raw.startswith("/") or "\\" in raw:
        raise InvalidRequest(f"{field} must be a relative prefix such as {example!r}", field=field.split(".")[0])
    if any(part in ("..", ".") or part.startswith(".") for part in raw.split("/")):
        # Hidden folders hold the service's own state (DIR/.imgclassify/): never photos to sort.
        raise InvalidRequest(f"{field} may not contain '.' or '..' segments or hidden folders",
                             field=field.split(".")[0])
    return raw if raw.endswith("/") else raw + "/"


def _validate_examples(raw: object, classes: list[str]) -> tuple[tuple[str, str], ...]:
    """{class: prefix} -> ((class as it appears in classes, prefix), ...)."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise InvalidRequest("examples must be an object mapping a class to the prefix of its example photos, "
                             "such as {\"roses\": \"examples/roses/\"}", field="examples")
    by_fold = {name.casefold(): name for name in classes}
    taught: dict[str, str] = {}
    for key, prefix in raw.items():
        name = by_fold.get(key.strip().casefold()) if isinstance(key, str) else None
        if name is None:
            raise InvalidRequest(f"examples names {key!r}, which is not one of classes", field="examples")
        taught[name] = _validate_prefix(prefix, f"examples.{name}", "examples/roses/")
    return tuple(taught.items())


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


def _score(raw: object, name: str) -> float:
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or not 0.0 <= raw <= 1.0:
        raise InvalidRequest(f"{name} must be a number from 0 to 1", field=name)
    return float(raw)


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
    old_client = is_old_client(body)
    classes: list[str] = []
    seen: set[str] = set()
    for position, raw in enumerate(raw_classes):
        name = validate_class_name(raw, position, as_spelled=old_client)
        # An old client's spellings each get their folder ("cat" and "Cat": both, holding the same copies); a new
        # client's are merged (any case, blanks around).
        key = name if old_client else name.casefold()
        if key not in seen:
            seen.add(key)
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

    raw_match = body.get("match", MatchMode(defaults.match).value)
    if not isinstance(raw_match, str) or raw_match not in choices(MatchMode):
        raise InvalidRequest(f"match must be one of {', '.join(choices(MatchMode))}", field="match")
    match = MatchMode(raw_match)

    fallback = defaults.min_score if defaults.min_score is not None and match == MatchMode.HIERARCHY else \
        DEFAULT_MIN_SCORES[match]
    min_score = _score(body.get("min_score", fallback), "min_score")
    detector_min_score = _score(body.get("detector_min_score", defaults.detector_min_score), "detector_min_score")

    dry_run, watch = body.get("dry_run", False), body.get("watch", False)
    for name, value in (("dry_run", dry_run), ("watch", watch)):
        if not isinstance(value, bool):
            raise InvalidRequest(f"{name} must be true or false", field=name)
    callback_url = _validate_callback_url(body.get("callback_url", ""), defaults.callbacks)
    examples = _validate_examples(body.get("examples"), classes)
    if examples and match != MatchMode.HIERARCHY:
        raise InvalidRequest("examples need match 'hierarchy' (the default)", field="examples")

    spec = JobSpec(classes=tuple(classes), bucket=bucket, source_prefix=source_prefix, top_k=top_k,
                   min_score=min_score, match=match, dry_run=dry_run, watch=watch,
                   callback_url=callback_url, detector_min_score=detector_min_score, examples=examples)
    return JobRequest(spec, _validate_request_id(body.get("request_id")))




def old_rule_for_unknown_words(body: object, spec: JobSpec) -> tuple[JobSpec, list[str]]:
    """An old client's job (a body of `classes` alone) asking for a word no rule of ours knows — not a WordNet
    noun, not taught by examples or by corrections — is sorted by the old service's rule (`substring`: the class
    within the top-5 labels), the whole job, as the old service sorted it: the old service took any word, and an old
    client shows a 400 only as `'id'`. Returns the spec to run and the warning to say; a new client's request, or
    one whose words all mean something, is left as it was (an unknown word is the 400 with suggestions)."""
    if not isinstance(body, dict) or not is_old_client(body) or spec.match != MatchMode.HIERARCHY:
        return spec, []
    unknown = [name for name in spec.classes if name not in spec.taught and not is_word(name)]
    if not unknown:
        return spec, []
    words = ", ".join(repr(name) for name in unknown)
    warning = (f"{words} {'is' if len(unknown) == 1 else 'are'} no WordNet noun and not taught: this request has "
               "only classes, as the old service's clients send, so the whole job is sorted by the old rule "
               "(match 'substring': the class within the top-5 labels); send \"match\": \"hierarchy\" for the "
               "400 with suggestions")
    return replace(spec, match=MatchMode.SUBSTRING, min_score=DEFAULT_MIN_SCORES[MatchMode.SUBSTRING]), [warning]
