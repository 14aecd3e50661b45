"""Corrections: a person says a photo of a job belongs to a class, or does not. The request, and what a stored
correction does to a later job's decision. Plain data."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from common.domain.errors import InvalidRequest
from common.domain.requests import validate_class_name
from common.domain.results import ImageResult

MAX_CORRECTIONS = 500  # per request


@dataclass(frozen=True)
class Correction:
    name: str  # the job's result, by object name
    class_name: str  # as typed
    belongs: bool

    @property
    def word(self) -> str:
        """What corrections are kept under: the class word, whatever its case."""
        return self.class_name.casefold()


def parse_corrections(body: object) -> list[Correction]:
    """{"corrections": [{"name": ..., "class": ..., "belongs": true|false}, ...]}; raises InvalidRequest naming
    the offending entry."""
    if not isinstance(body, dict) or set(body) != {"corrections"}:
        raise InvalidRequest('the body must be {"corrections": [{"name": ..., "class": ..., "belongs": true}]}',
                             field="corrections")
    items = body["corrections"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_CORRECTIONS:
        raise InvalidRequest(f"corrections must be a list of 1 to {MAX_CORRECTIONS} entries", field="corrections")
    parsed = []
    for position, item in enumerate(items):
        where = f"corrections[{position}]"
        if not isinstance(item, dict) or set(item) != {"name", "class", "belongs"}:
            raise InvalidRequest(f"{where} must have exactly name, class and belongs", field="corrections")
        if not isinstance(item["name"], str) or not item["name"]:
            raise InvalidRequest(f"{where}.name must be the name of one of the job's photos", field="corrections")
        if not isinstance(item["belongs"], bool):
            raise InvalidRequest(f"{where}.belongs must be true or false", field="corrections")
        try:
            class_name = validate_class_name(item["class"], position)
        except InvalidRequest as exc:
            raise InvalidRequest(f"{where}.class: {exc.message}", field="corrections") from None
        parsed.append(Correction(item["name"], class_name, item["belongs"]))
    return parsed


def corrected_matches(classes: tuple[str, ...], matched: tuple[str, ...], content: str,
                      said: Mapping[str, Mapping[str, bool]]) -> tuple[str, ...]:
    """A photo someone corrected is what they said, whatever the model says (`said`: class -> content -> belongs)."""
    return tuple(c for c in classes if said.get(c, {}).get(content, c in matched))


def placed(result: ImageResult, class_name: str, by_copies: bool) -> bool:
    """Whether a photo is in a class now. For a job whose copies stand (`by_copies`: neither a dry run nor undone):
    whether it has a copy in the class's folder, so a correction that took the copy away or added one moves it;
    otherwise what it matched."""
    if not result.ok:
        return False
    if not by_copies:
        return class_name in result.matched
    folder = f"{class_name}/".casefold()
    return any(copy.casefold().startswith(folder) for copy in result.copies)


def added_elsewhere(result: ImageResult, classes: tuple[str, ...]) -> list[str]:
    """The photo's copies outside every folder of the job's classes: where corrections added it."""
    folders = tuple(f"{c}/".casefold() for c in classes)
    return [copy for copy in result.copies if not copy.casefold().startswith(folders)]
