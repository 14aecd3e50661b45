"""The service's closed vocabularies, defined once. The CLI, Settings, deploy.sh and the tools take their lists
from here (`python -m common.domain.options` prints them for shell scripts)."""
from __future__ import annotations

import sys
from enum import StrEnum
from typing import TypeVar


class Model(StrEnum):
    RESNET50 = "resnet50"
    MOBILENET_V2 = "mobilenet_v2"


class Runtime(StrEnum):
    KERAS = "keras"  # TensorFlow: the reference
    LITERT = "litert"  # a .tflite build, no TensorFlow


class MatchMode(StrEnum):
    HIERARCHY = "hierarchy"  # the class's meaning in WordNet
    LABEL = "label"  # an exact top-k label
    SUBSTRING = "substring"  # the replaced service's rule


class Backend(StrEnum):
    GCP = "gcp"  # Cloud Storage, Firestore, Pub/Sub (or their emulators)
    LOCAL = "local"  # a folder, SQLite, a thread pool


def choices(kind: type[StrEnum]) -> list[str]:
    return [member.value for member in kind]


Choice = TypeVar("Choice", bound=StrEnum)


def parse(kind: type[Choice], raw: object, what: str) -> Choice:
    """The member named by raw, or ValueError naming the valid choices."""
    try:
        if not isinstance(raw, str):
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise ValueError(f"unknown {what} {raw!r}; choose one of {', '.join(choices(kind))}") from None


VOCABULARIES: dict[str, type[StrEnum]] = {"model": Model, "runtime": Runtime, "match": MatchMode,
                                          "backend": Backend}

if __name__ == "__main__":
    # `python -m common.domain.options model` -> "resnet50 mobilenet_v2" (for deploy.sh's checks)
    print(" ".join(choices(VOCABULARIES[sys.argv[1]])))
