"""Peak memory of decoding one image, per pixel format: what classify_image, a served thumbnail and a served
"full photo" (`…/thumbnail?size=full`, at most 2048 px) cost.

Each format is made here (no test data needed) at the size that stresses it, then decoded in a fresh process
that reports its peak RSS (VmHWM) above the baseline it had after importing everything and reading the file. Then
8 full-size previews at once in one process (what 8 concurrent `size=full` requests cost), with the longest
pause a status-sized piece of pure-Python work saw meanwhile. Prints JSON.

    .venv/bin/python bench/decode_memory.py [--side 6320] [--out bench/results/decode-memory.json]
        [--code DIR]   # measure another checkout's common/ (e.g. `git archive HEAD~1 common | tar -x -C DIR`)
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
import threading, time
from common.inference.decoding import decode_image
from common.inference.thumbnails import make_full_photo, make_thumbnail
from common.domain.errors import ClientError, PermanentImageError
data = open(sys.argv[1], "rb").read()
what, at_once = sys.argv[2], int(sys.argv[4])
base = hwm_kb()
outcomes, pauses = [], [0.0]

def one():
    try:
        if what == "decode":
            decode_image(data)
            outcomes.append("decoded")
        elif (make_thumbnail(data) if what == "thumbnail" else make_full_photo(data)) is None:
            outcomes.append("no preview")
        else:
            outcomes.append("decoded")
    except PermanentImageError as exc:
        outcomes.append("refused: " + exc.reason)
    except ClientError as exc:  # a full photo that cannot be made: the 400 its request gets
        outcomes.append("refused: " + exc.message)

def probe(stop):  # a status answer's worth of pure Python every 10 ms: how long the decodes hold it up
    while not stop.is_set():
        started = time.perf_counter()
        json.dumps({"id": "x" * 32, "matches": {str(i): i for i in range(50)}})
        time.sleep(0.01)
        pauses.append(time.perf_counter() - started - 0.01)

stop = threading.Event()
prober = threading.Thread(target=probe, args=(stop,))
prober.start()
started = time.perf_counter()
workers = [threading.Thread(target=one) for _ in range(at_once)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
seconds = time.perf_counter() - started
stop.set()
prober.join()
peak = hwm_kb()
print(json.dumps({"peak_mb": round((peak - base) / 1024, 1), "outcome": outcomes[0], "seconds": round(seconds, 2),
                  "longest_pause_ms": round(max(pauses) * 1000, 1)}))
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


CONCURRENT = ("png-16bit-gray", "tiff-float32", "jpeg-progressive-24mp", "png-rgba-16mp")


def make_images(folder: Path, side: int, only: list[str] | None = None) -> dict[str, Path]:
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
        if only and name not in only:
            continue
        path = folder / f"{name}.{extension}"
        image.save(path, **options)
        paths[name] = path
    return paths


def measure(path: Path, what: str, code: Path, at_once: int = 1) -> dict[str, object]:
    """One image decoded (`what`: decode, thumbnail or full) in a fresh process, `at_once` times concurrently."""
    with tempfile.NamedTemporaryFile("w", suffix=".py") as child:
        child.write(CHILD)
        child.flush()
        out = subprocess.run([sys.executable, child.name, str(path), what, str(code), str(at_once)],
                             capture_output=True, text=True, cwd=code, check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    if at_once == 1:
        del measured["longest_pause_ms"], measured["seconds"]
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--side", type=int, default=6320, help="width and height of the non-JPEG images")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--code", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="the checkout whose common/ is measured (default: this one)")
    parser.add_argument("--at-once", type=int, default=8, help="concurrent full-size previews (default 8)")
    parser.add_argument("--only", nargs="*", help="measure only these formats")
    args = parser.parse_args()
    sys.path.insert(0, str(args.code))
    from common.inference import decoding

    budget = getattr(decoding, "MAX_DECODED_BYTES", 0)  # 0: a version of the decoder from before the budget

    with tempfile.TemporaryDirectory() as folder:
        images = make_images(Path(folder), args.side, args.only)
        rows = {}
        for name, path in images.items():
            with Image.open(path) as image:
                size, mode = image.size, image.mode
            rows[name] = {"pixels": f"{size[0]}x{size[1]}", "mode": mode, "file_kb": path.stat().st_size // 1024,
                          **{what: measure(path, what, args.code) for what in ("decode", "thumbnail", "full")}}
        # The attack: several "full photo" requests at once for the formats whose conversion is expensive.
        concurrent = {name: measure(images[name], "full", args.code, args.at_once)
                      for name in CONCURRENT if name in images}
    peak = max(max(r[what]["peak_mb"] for what in ("decode", "thumbnail", "full")) for r in rows.values())
    result = {"benchmark": "decode_memory", "machine": describe(), "side": args.side, "code": str(args.code),
              "budget_mb": round(budget / 2**20), "max_peak_mb": peak, "formats": rows,
              f"full_{args.at_once}_at_once": concurrent}
    emit(result, args.out)


if __name__ == "__main__":
    main()
