"""What a user's class name means: WordNet noun synsets, and the ImageNet classes (the classifier's vocabulary) and
COCO classes (the detector's) that descend from them.

Reads the generated data in common/data (tools/gen_wordnet_data.py); no WordNet install, no download.
"""
from __future__ import annotations

import difflib
import gzip
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from common.domain.errors import InvalidRequest
from common.domain.labels import imagenet_classes
from common.domain.options import MatchMode

WEAK_CLASS_LIMIT = 5  # fewer ImageNet classes than this under a query: warn the user
_SYNSET_NAME = re.compile(r"^[a-z0-9_'.-]+\.n\.\d{2}$")
# WordNet's detachment rules for nouns (as in its morphy), longest suffix first.
_NOUN_SUFFIXES = (("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
                  ("ies", "y"), ("s", ""))


# Words people sort photos by that no ImageNet or COCO class descends from in WordNet (or that WordNet lacks), and
# the classes that find them: what a message points to instead of "matches nothing". By base form.
EVERYDAY: dict[str, tuple[str, ...]] = {
    "pet": ("dogs", "cats"), "kid": ("people",), "child": ("people",), "baby": ("people",),
    "family": ("people",), "friend": ("people",), "selfie": ("people",), "portrait": ("people",),
    "wedding": ("people", "groom", "gown"), "party": ("people",), "beach": ("seashore", "sandbar"),
    "sea": ("seashore", "sandbar"), "landscape": ("valley", "lakeside", "seashore", "mountains"),
    "nature": ("valley", "lakeside", "seashore", "mountains"), "mountain": ("mountains",),
    "document": ("menu", "envelope", "web site"), "receipt": (), "screenshot": ("web site",), "sunset": (),
    "snow": ("snowmobile", "ski"), "christmas": (), "birthday": ("balloon", "candles"), "tree": (),
    "city": (), "holiday": (), "concert": ("stage",), "sport": ("people",), "car": ("cars",),
}


def _everyday(word: str) -> tuple[str, ...] | None:
    """The classes that find an everyday word (possibly none), or None when it is not one."""
    word = Taxonomy.normalise(word)
    for form in (word, *(word[:-len(suffix)] + ending for suffix, ending in _NOUN_SUFFIXES
                         if word.endswith(suffix) and len(word) > len(suffix)), {"children": "child"}.get(word, "")):
        if form in EVERYDAY:
            return EVERYDAY[form]
    return None


def instead(query: str, named: bool = True) -> str:
    """What would find what `query` means, for a message about a class that finds nothing (`named`: the classes
    that find it too; else they are the error's suggestions)."""
    covering = (_everyday(query) or ()) if named else ()
    teach = f"teach it by example photos (--examples {Taxonomy.normalise(query).replace('_', '-')}=FOLDER)"
    if not covering:
        return teach
    listed = f"{', '.join(covering[:-1])} and {covering[-1]}" if len(covering) > 1 else covering[0]
    return f"ask for {listed} instead, or {teach}"


def imagenet_classes_phrase(count: int) -> str:
    return f"{count} ImageNet class" + ("" if count == 1 else "es")


@dataclass(frozen=True)
class Resolution:
    query: str
    synsets: tuple[str, ...]
    classes: frozenset[int]
    warning: str | None = None
    detector_classes: frozenset[int] = frozenset()  # COCO classes under the synsets

    @property
    def needs_detector(self) -> bool:
        """The detector adds what ImageNet lacks: people (3 ImageNet classes), horses (1), giraffes (0)…"""
        return bool(self.detector_classes) and len(self.classes) < WEAK_CLASS_LIMIT

    def describe(self, detector: bool = False) -> list[str]:
        """What the class means, in words: its synsets, how many ImageNet classes (and, where the service has the
        detector, which COCO classes) it covers."""
        taxonomy = load_taxonomy()
        described = []
        for name in self.synsets:
            node = taxonomy.by_name[name]
            coco = sorted(taxonomy.coco[i]["name"] for i in taxonomy.coco_cover[node]) if detector else []
            text = f"{name} ({imagenet_classes_phrase(len(taxonomy.cover[node]))}"
            described.append(text + (f"; detector: {', '.join(coco[:6])}{'…' if len(coco) > 6 else ''})" if coco
                                     else ")"))
        return described

    def warning_with(self, detector: bool) -> str | None:
        return None if detector and self.needs_detector else self.warning


class UnknownClass(InvalidRequest):
    """A class that is no WordNet noun; `word` is the class as asked for."""

    def __init__(self, message: str, word: str = "", **details: object) -> None:
        super().__init__(message, field="classes", **details)
        self.word = word


class Taxonomy:
    def __init__(self, data: dict[str, Any], all_lemmas: frozenset[str]) -> None:
        self.synsets = data["synsets"]
        self.by_name = {s["name"]: i for i, s in enumerate(self.synsets)}
        self.senses: dict[str, list[int]] = data["senses"]
        self.exceptions: dict[str, list[str]] = data["exceptions"]
        self.all_lemmas = all_lemmas
        self.leaves: list[int] = data["imagenet"]
        ancestors: dict[int, frozenset[int]] = {}

        def ancestors_of(node: int) -> frozenset[int]:
            if node not in ancestors:
                ancestors[node] = frozenset({node}).union(*(ancestors_of(p) for p in self.synsets[node]["parents"]))
            return ancestors[node]

        self.cover: list[set[int]] = [set() for _ in self.synsets]
        for imagenet_index, leaf in enumerate(self.leaves):
            for node in ancestors_of(leaf):
                self.cover[node].add(imagenet_index)
        self.coco: list[dict[str, Any]] = data.get("coco", [])
        self.coco_cover: list[set[int]] = [set() for _ in self.synsets]
        for coco_index, entry in enumerate(self.coco):
            for node in ancestors_of(entry["synset"]):
                self.coco_cover[node].add(coco_index)
        self._is_imagenet_class = set(self.leaves)
        self._lemma_list = sorted(self.senses)

    @staticmethod
    def normalise(query: str) -> str:
        return re.sub(r"[\s-]+", "_", query.strip().casefold())

    def base_forms(self, word: str) -> list[str]:
        """The word itself and its singular forms, as WordNet's morphy finds them (last word of a phrase)."""
        head, _, last = word.rpartition("_")
        prefix = head + "_" if head else ""
        forms = [word]
        forms += [prefix + base for base in self.exceptions.get(last, [])]
        forms += [prefix + last[: -len(suffix)] + ending for suffix, ending in _NOUN_SUFFIXES
                  if last.endswith(suffix) and len(last) > len(suffix)]
        return list(dict.fromkeys(f for f in forms if f in self.all_lemmas or f in self.senses))

    def _best_sense(self, lemma: str) -> int | None:
        """The most frequent sense that has ImageNet or COCO descendants (WordNet lists senses by frequency)."""
        for sense in self.senses.get(lemma, []):
            if sense >= 0 and (self.cover[sense] or self.coco_cover[sense]):
                return sense
        return None

    def resolve(self, query: str, position: int = 0) -> Resolution:
        word = self.normalise(query)
        if _SYNSET_NAME.match(word) and word in self.by_name:
            node = self.by_name[word]
            return self._resolution(query, [node])
        forms = self.base_forms(word)
        if not forms:
            covering = _everyday(word)
            if covering is not None:
                raise UnknownClass(f"classes[{position}] {query!r} is not a WordNet noun: {instead(query, False)}",
                                   query, suggestions=list(covering))
            raise UnknownClass(f"classes[{position}] {query!r} is not a WordNet noun", query,
                               suggestions=self.suggest(word))
        chosen = [s for s in (self._best_sense(f) for f in forms) if s is not None]
        return self._resolution(query, list(dict.fromkeys(chosen[:1])) if chosen else [])

    def _resolution(self, query: str, nodes: list[int]) -> Resolution:
        classes = frozenset().union(*(self.cover[n] for n in nodes)) if nodes else frozenset()
        detected = frozenset().union(*(self.coco_cover[n] for n in nodes)) if nodes else frozenset()
        names = tuple(self.synsets[n]["name"] for n in nodes)
        warning = None
        if not classes and detected:
            warning = f"{query!r} is a WordNet noun but no ImageNet class descends from it: it matches only what the " \
                      "object detector finds"
        elif not classes:
            warning = f"{query!r} covers no ImageNet class, so it finds nothing by itself: {instead(query)}"
        elif len(classes) < WEAK_CLASS_LIMIT and not set(nodes) <= self._is_imagenet_class:
            # A query naming an ImageNet class itself ("tabby") is precise, not weak.
            labels = ", ".join(imagenet_classes()[i].name for i in sorted(classes))
            warning = f"{query!r} ({', '.join(names)}) covers only {imagenet_classes_phrase(len(classes))}: {labels}"
        return Resolution(query, names, classes, warning, detected)

    def vocabulary(self) -> list[str]:
        """Every word that names something the service can find (its commonest such sense covers an ImageNet or a
        COCO class), the widest first: what a form suggests as someone types."""
        found = []
        for lemma in self._lemma_list:
            sense = self._best_sense(lemma)
            if sense is not None:
                found.append((-len(self.cover[sense]) - len(self.coco_cover[sense]), lemma.replace("_", " ")))
        return [word for _, word in sorted(found)]

    def suggest(self, word: str) -> list[str]:
        close = difflib.get_close_matches(word, self._lemma_list, n=3, cutoff=0.7)
        return [c.replace("_", " ") for c in close]


@lru_cache(maxsize=1)
def load_taxonomy() -> Taxonomy:
    root = resources.files("common").joinpath("data")
    data = json.loads(root.joinpath("wordnet_imagenet.json").read_text("utf-8"))
    with root.joinpath("wordnet_noun_lemmas.txt.gz").open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as text:
        lemmas = frozenset(text.read().split())
    return Taxonomy(data, lemmas)


COMMON_CLASSES = ("people", "dogs", "cats", "birds", "horses", "cars", "food", "flowers", "trucks", "boats",
                  "musical instruments", "fruit", "furniture")


@lru_cache(maxsize=1)
def class_vocabulary() -> tuple[str, ...]:
    """What a form suggests as someone types: the words people ask for most (the detector's people first), the
    detector's classes, then every word the service can find, the widest first."""
    taxonomy = load_taxonomy()
    return tuple(dict.fromkeys((*COMMON_CLASSES, *(entry["name"] for entry in taxonomy.coco), *taxonomy.vocabulary())))


@lru_cache(maxsize=4096)
def resolve(query: str) -> Resolution:
    return load_taxonomy().resolve(query)


TAUGHT = "its example photos"  # what a class taught by examples means, beside any WordNet meaning


@lru_cache(maxsize=1024)
def _resolve_all(classes: tuple[str, ...], detector: bool, taught: frozenset[str] = frozenset()
                 ) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], tuple[str, ...]]:
    # Cached: job_status shows the resolution on every poll, and a job's classes never change.
    taxonomy = load_taxonomy()
    meanings: list[tuple[str, tuple[str, ...]]] = []
    warnings = []
    unknown: list[UnknownClass] = []
    for i, c in enumerate(classes):
        try:
            resolution = taxonomy.resolve(c, i)
        except UnknownClass as exc:
            if c not in taught:
                unknown.append(exc)
            meanings.append((c, (TAUGHT,)))  # any word may name a class its examples define
            continue
        meanings.append((c, tuple(resolution.describe(detector)) + ((TAUGHT,) if c in taught else ())))
        warning = resolution.warning_with(detector)
        if warning and c not in taught:  # "matches nothing" is not true of a class with examples
            warnings.append(warning)
    if len(unknown) == 1:
        raise unknown[0]
    if unknown:  # every word the request has wrong, at once
        raise UnknownClass("; ".join(_with_suggestions(exc) for exc in unknown), ", ".join(e.word for e in unknown))
    return tuple(meanings), tuple(warnings)


def _with_suggestions(exc: UnknownClass) -> str:
    suggestions = exc.details.get("suggestions")
    if isinstance(suggestions, list) and suggestions:
        return f"{exc.message} (did you mean {' or '.join(str(s) for s in suggestions)}?)"
    return exc.message


@lru_cache(maxsize=4096)
def is_word(query: str) -> bool:
    """Whether a class names a WordNet noun."""
    try:
        resolve(query)
    except UnknownClass:
        return False
    return True


def _needs(query: str) -> bool:
    try:
        return resolve(query).needs_detector
    except UnknownClass:  # a word only its example photos define
        return False


def needs_detector(classes: tuple[str, ...], match: MatchMode) -> bool:
    """Whether a job's classes need the object detector (hierarchy matching only)."""
    return match == MatchMode.HIERARCHY and any(_needs(c) for c in classes)


def describe_resolution(classes: tuple[str, ...], match: MatchMode, detector: bool = False,
                        taught: frozenset[str] = frozenset()) -> dict[str, Any]:
    """What each class means, and warnings (for a service with or without the object detector); raises
    UnknownClass (a 400 with suggestions) for a non-word without example photos (`taught`)."""
    if match != MatchMode.HIERARCHY:
        return {}
    resolved, warnings = _resolve_all(classes, detector, taught)
    return {"resolved": {query: list(meaning) for query, meaning in resolved}, "warnings": list(warnings)}
