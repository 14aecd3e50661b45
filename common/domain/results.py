"""What classifying one image produced, and the counters a job adds up from those results. Plain data."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


@dataclass(frozen=True)
class Label:
    index: int
    name: str
    score: float


class PredictionSource(StrEnum):
    """Where an image's probabilities came from."""

    MODEL = "model"
    STORE = "store"  # a stored prediction: no model run
    RECOMPUTED = "recomputed"  # the stored one was unreadable, so the model ran again


@dataclass(frozen=True)
class ImageResult:
    """The outcome for one image of one job; recorded exactly once."""

    name: str
    ok: bool
    matched: tuple[str, ...] = ()
    labels: tuple[Label, ...] = ()
    reason: str = ""
    scores: dict[str, float] = field(default_factory=dict)  # per requested class, in hierarchy mode
    copies: tuple[str, ...] = ()  # where the image's copies are (written now, or already there with its bytes)
    written: tuple[str, ...] = ()  # the copies this job wrote: its manifest, what undo removes
    content: str = ""  # the photo's content fingerprint (md5) when classified: undo removes only copies still equal
    prediction: str = ""  # a PredictionSource ("" for a failure before any prediction)
    retryable: bool = False  # a failure that may pass (the disk was full): the next run of the job retries it
    # Per requested class, the object detector's best detection under it (label, score, box), when it ran.
    detections: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Per class taught by example photos, the photo's similarity to the examples' prototype.
    similarities: dict[str, float] = field(default_factory=dict)
    # Per copy this job wrote, the identity of what it wrote (ports.Copied.identity): undo removes only that file.
    identities: dict[str, str] = field(default_factory=dict)
    # The classes whose decision a person's correction made (in or out, against what the models said).
    corrected: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "matched": list(self.matched), "reason": self.reason,
                "scores": {k: round(v, 6) for k, v in self.scores.items()},
                "labels": [{"index": l.index, "name": l.name, "score": round(l.score, 6)} for l in self.labels],
                "copies": list(self.copies), "written": list(self.written), "content": self.content,
                "prediction": str(self.prediction), **({"retryable": True} if self.retryable else {}),
                **({"detections": self.detections} if self.detections else {}),
                **({"similarities": self.similarities} if self.similarities else {}),
                **({"identities": self.identities} if self.identities else {}),
                **({"corrected": list(self.corrected)} if self.corrected else {})}

    def claimed(self, copy: str, written: bool, identity: str = "") -> ImageResult:
        """The result with copy among its copies (and owned by the job when this job wrote it)."""
        if not written:
            return replace(self, copies=_with(self.copies, copy))
        return replace(self, copies=_with(self.copies, copy), written=_with(self.written, copy),
                       identities={**self.identities, copy: identity} if identity else self.identities)

    def released(self, copy: str) -> ImageResult:
        """The result without copy: neither where the photo is nor what the job owns."""
        return replace(self, copies=tuple(c for c in self.copies if c != copy),
                       written=tuple(w for w in self.written if w != copy),
                       identities={k: v for k, v in self.identities.items() if k != copy})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageResult:
        return cls(name=data["name"], ok=bool(data["ok"]), matched=tuple(data.get("matched", ())),
                   reason=data.get("reason", ""), scores=dict(data.get("scores", {})),
                   labels=tuple(Label(int(l["index"]), str(l["name"]), float(l["score"]))
                                for l in data.get("labels", ())),
                   copies=tuple(data.get("copies", ())), written=tuple(data.get("written", ())),
                   content=str(data.get("content", "")), prediction=str(data.get("prediction", "")),
                   retryable=bool(data.get("retryable", False)), detections=dict(data.get("detections", {})),
                   similarities=dict(data.get("similarities", {})),
                   identities={str(k): str(v) for k, v in dict(data.get("identities") or {}).items()},
                   corrected=tuple(str(c) for c in data.get("corrected") or ()))

    @classmethod
    def failure(cls, name: str, reason: str, retryable: bool = False) -> ImageResult:
        return cls(name, ok=False, reason=reason, retryable=retryable)


@dataclass
class Counters:
    processed: int = 0
    failed: int = 0
    matches: dict[str, int] = field(default_factory=dict)
    unmatched: int = 0  # classified, but matched none of the job's classes
    from_store: int = 0  # classified from a stored prediction, without the model
    recomputed: int = 0  # stored predictions that were unreadable and were computed again
    arrived: int = 0  # watch jobs: objects registered (listed or announced), each once
    last_result_at: str | None = None  # ISO time of the latest result recorded: a job that stops moving stalls
    corrected: dict[str, int] = field(default_factory=dict)  # per class, photos placed by a correction

    @classmethod
    def of(cls, result: ImageResult) -> Counters:
        return cls(processed=int(result.ok), failed=int(not result.ok), matches={m: 1 for m in result.matched},
                   unmatched=int(result.ok and not result.matched),
                   from_store=int(result.prediction == PredictionSource.STORE),
                   recomputed=int(result.prediction == PredictionSource.RECOMPUTED),
                   corrected={c: 1 for c in result.corrected})

    def add(self, other: Counters) -> None:
        self.processed += other.processed
        self.failed += other.failed
        self.unmatched += other.unmatched
        self.from_store += other.from_store
        self.recomputed += other.recomputed
        self.arrived += other.arrived
        if other.last_result_at and (self.last_result_at is None or other.last_result_at > self.last_result_at):
            self.last_result_at = other.last_result_at
        for name, count in other.matches.items():
            self.matches[name] = self.matches.get(name, 0) + count
        for name, count in other.corrected.items():
            self.corrected[name] = self.corrected.get(name, 0) + count


def _with(names: tuple[str, ...], name: str) -> tuple[str, ...]:
    return names if name in names else (*names, name)
