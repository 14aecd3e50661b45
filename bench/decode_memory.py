"""Peak memory of decoding one image, per pixel format: what classify_image and a served preview cost.

Each format is made here (no test data needed) at the size that stresses it, then decoded in a fresh process
that reports its peak RSS (VmHWM) above the baseline it had after importing everything and reading the file. Prints JSON.

    .venv/bin/python bench/decode_memory.py [--side 6320] [--out bench/results/decode-memory.json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.machine import describe, emit  # noqa: E402

CHILD = r"""
import sys, json
sys.path.insert(0, sys.argv[3])
def hwm_kb():  # VmHWM: this process's peak RSS (ru_maxrss would include the parent's, inherited at fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
from common.inference.decoding import decode_image
from common.inference.thumbnails import make_thumbnail
from common.domain.errors import PermanentImageError
data = open(sys.argv[1], "rb").read()
base = hwm_kb()
outcome = "decoded"
try:
    if sys.argv[2] == "decode":
        decode_image(data)
    elif make_thumbnail(data) is None:
        outcome = "no preview"
except PermanentImageError as exc:
    outcome = "refused: " + exc.reason
peak = hwm_kb()
print(json.dumps({"peak_mb": round((peak - base) / 1024, 1), "outcome": outcome}))
"""


def _textured(width: int, height: int, channels: int, dtype: type = np.uint8) -> np.ndarray:
    """Smooth gradients with a band of noise: files that look like photos to the size checks, quick to make."""
    rng = np.random.default_rng(7)
    ramp = np.add.outer(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32))
    scale = 255.0 if dtype == np.uint8 else 65535.0 if dtype == np.uint16 else 1.0
    image = (ramp / ramp.max() * scale).astype(dtype)
    band = min(height, 300)
    noise = rng.integers(0, int(min(scale, 255)) + 1, size=(band, width)).astype(dtype)
    image[:band] = noise
    return image if channels == 1 else np.repeat(image[:, :, None], channels, axis=2)


def make_images(folder: Path, side: int) -> dict[str, Path]:
    rgb = Image.fromarray(_textured(side, side, 3))
    small = Image.fromarray(_textured(4000, 4000, 3))
    made = {
        "png-16bit-gray": (Image.fromarray(_textured(side, side, 1, np.uint16)), "png", {}),
        "tiff-float32": (Image.fromarray(_textured(side, side, 1, np.float32)), "tif",
                         {"compression": "tiff_deflate"}),
        "png-rgb": (rgb, "png", {}),
        "png-rgba": (rgb.convert("RGBA"), "png", {}),
        "tiff-cmyk": (rgb.convert("CMYK"), "tif", {"compression": "tiff_deflate"}),
        "gif-palette": (rgb.convert("P"), "gif", {}),
        "webp-rgba": (rgb.convert("RGBA"), "webp", {"quality": 80}),
        "bmp-rgb": (rgb, "bmp", {}),
        "jpeg-baseline-60mp": (Image.fromarray(_textured(9000, 6700, 3)), "jpg", {"quality": 85}),
        "jpeg-progressive-60mp": (Image.fromarray(_textured(9000, 6700, 3)), "jpg",
                                  {"quality": 85, "progressive": True}),
        "jpeg-cmyk": (rgb.convert("CMYK"), "jpg", {"quality": 85}),
        # The formats whose full size is over the budget, at a size a phone or camera makes (16 to 24 Mpx).
        "png-rgba-16mp": (small.convert("RGBA"), "png", {}),
        "webp-rgb-16mp": (small, "webp", {"quality": 80}),
        "webp-rgb-8mp": (Image.fromarray(_textured(3400, 2400, 3)), "webp", {"quality": 80}),
        "jpeg-progressive-24mp": (Image.fromarray(_textured(6000, 4000, 3)), "jpg",
                                  {"quality": 85, "progressive": True}),
    }
    try:
        from pillow_heif import register_heif_opener

        register_heif_opener()
        made["heic-rgb"] = (rgb, "heic", {"quality": 80})
        made["heic-rgb-16mp"] = (small, "heic", {"quality": 80})
    except ImportError:
        pass
    paths = {}
    for name, (image, extension, options) in made.items():
        path = folder / f"{name}.{extension}"
        image.save(path, **options)
        paths[name] = path
    return paths


def measure(path: Path, what: str) -> dict[str, object]:
    root = Path(__file__).resolve().parent.parent
    with tempfile.NamedTemporaryFile("w", suffix=".py") as child:
        child.write(CHILD)
        child.flush()
        out = subprocess.run([sys.executable, child.name, str(path), what, str(root)], capture_output=True,
                             text=True, cwd=root, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=6320, help="width and height of the non-JPEG images")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    from common.inference import decoding

    budget = getattr(decoding, "MAX_DECODED_BYTES", 0)  # 0: a version of the decoder from before the budget

    with tempfile.TemporaryDirectory() as folder:
        images = make_images(Path(folder), args.side)
        rows = {}
        for name, path in images.items():
            with Image.open(path) as image:
                size, mode = image.size, image.mode
            rows[name] = {"pixels": f"{size[0]}x{size[1]}", "mode": mode, "file_kb": path.stat().st_size // 1024,
                          "decode": measure(path, "decode"), "thumbnail": measure(path, "thumbnail")}
    peak = max(max(r["decode"]["peak_mb"], r["thumbnail"]["peak_mb"]) for r in rows.values())
    result = {"benchmark": "decode_memory", "machine": describe(), "side": args.side,
              "budget_mb": round(budget / 2**20), "max_peak_mb": peak, "formats": rows}
    emit(result, args.out)


if __name__ == "__main__":
    main()
