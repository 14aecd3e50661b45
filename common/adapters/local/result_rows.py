"""A job's result as its SQLite row stores it: compact JSON (only what is not empty; a top label's name only where
it is not ImageNet's for its index; `written` as true where it is every copy), the name as SQLite can hold it, and
the text a page's search looks in. The keys are ImageResult.to_dict's, so SQL reads either form alike."""
from __future__ import annotations

import json
from typing import Any

from common.domain.labels import imagenet_classes
from common.domain.results import ImageResult


def db_name(name: str) -> str:
    """Object names as SQLite can store them: a file name that is not valid UTF-8 reaches us with surrogate
    escapes, which SQLite's UTF-8 text cannot hold; they are stored as backslash escapes instead."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def encode(result: ImageResult) -> str:
    """~0.3 KB instead of to_dict's ~0.7 KB; built field by field (written for every photo of every job: going
    through to_dict cost twice as much)."""
    names = imagenet_classes()
    data: dict[str, Any] = {} if db_name(result.name) == result.name else {"name": result.name}
    data["ok"] = result.ok
    optional: tuple[tuple[str, Any], ...] = (
        ("matched", list(result.matched)), ("reason", result.reason),
        ("scores", {k: round(v, 6) for k, v in result.scores.items()}),
        ("labels", [[label.index, round(label.score, 6)] if label.index < len(names) and
                    names[label.index].name == label.name else [label.index, label.name, round(label.score, 6)]
                    for label in result.labels]),
        ("copies", list(result.copies)),
        ("written", True if result.written and result.written == result.copies else list(result.written)),
        ("content", result.content), ("prediction", str(result.prediction)), ("retryable", result.retryable),
        ("detections", result.detections), ("similarities", result.similarities),
        ("identities", result.identities), ("corrected", list(result.corrected)))
    data.update((key, value) for key, value in optional if value not in ("", [], {}, False))
    return json.dumps(data, separators=(",", ":"))


def decode(name: str, payload: str) -> ImageResult:
    """A stored result, in the compact form or as to_dict wrote it before (kept as it was)."""
    data = json.loads(payload)
    data.setdefault("name", name)
    if data.get("written") is True:
        data["written"] = data.get("copies", [])
    names = imagenet_classes()
    data["labels"] = [label if isinstance(label, dict) else dict(zip(("index", "name", "score"), label))
                      if len(label) == 3 else {"index": label[0], "name": names[label[0]].name, "score": label[1]}
                      for label in data.get("labels", ())]
    return ImageResult.from_dict(data)


def search_text(result: ImageResult) -> str:
    """What a page's search looks in: the name, then the top labels (lowercased by SQLite, as the query is)."""
    return db_name(result.name) + "\n" + ", ".join(label.name for label in result.labels[:3])
