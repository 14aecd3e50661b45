"""Contact sheets: every photo under a folder as a numbered thumbnail on a grid, so a person can look at all of them
(how bench/data/person_labels.csv was made). Writes sheet-NN.png files and an index.tsv (number -> path) into OUT,
which should be outside the repository: the photos are not ours to commit.

  .venv/bin/python tools/contact_sheet.py /work/shared/photos /tmp/sheets [--columns 5 --rows 4 --size 200]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageOps

IMAGES = (".jpg", ".jpeg", ".png", ".bmp")
CAPTION = 16  # pixels under each thumbnail for its number and a short name


def photos(root: Path) -> list[Path]:
    """Every image under root in a stable order (the numbering must not change between runs)."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGES)


def thumbnail(path: Path, size: int) -> Image.Image:
    """The whole photo scaled into size×size (contain, not crop: a person at the edge must stay visible)."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
        return ImageOps.contain(image, (size, size))


def sheet(items: list[tuple[int, Path]], root: Path, columns: int, rows: int, size: int) -> Image.Image:
    canvas = Image.new("RGB", (columns * size, rows * (size + CAPTION)), "white")
    draw = ImageDraw.Draw(canvas)
    for slot, (number, path) in enumerate(items):
        x, y = (slot % columns) * size, (slot // columns) * (size + CAPTION)
        thumb = thumbnail(path, size - 4)
        canvas.paste(thumb, (x + (size - thumb.width) // 2, y + (size - thumb.height) // 2))
        name = path.relative_to(root).as_posix()
        draw.text((x + 3, y + size), f"{number} {name[-28:]}", fill="black")
    return canvas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--columns", type=int, default=5)
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--size", type=int, default=200)
    args = parser.parse_args(argv)
    found = photos(args.root)
    if not found:
        print(f"contact_sheet: no images under {args.root}", file=sys.stderr)
        return 1
    args.out.mkdir(parents=True, exist_ok=True)
    numbered = list(enumerate(found))
    per_sheet = args.columns * args.rows
    with (args.out / "index.tsv").open("w") as index:
        for number, path in numbered:
            index.write(f"{number}\t{path.relative_to(args.root).as_posix()}\n")
    for start in range(0, len(numbered), per_sheet):
        image = sheet(numbered[start:start + per_sheet], args.root, args.columns, args.rows, args.size)
        image.save(args.out / f"sheet-{start // per_sheet:02d}.png")
    print(f"{len(found)} photos, {-(-len(found) // per_sheet)} sheets in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
