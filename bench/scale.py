"""A library of 200,000 photos (issue 31): every command's cost per photo constant, a second question in seconds.

Builds distinct synthetic libraries from the shared photos — each file a re-encoded variant (random crop, 560-640 px,
JPEG quality 82-95, so every file's bytes differ) in nested folders (all/<year>/<month>/<event>/IMG_n.jpg), in a
temporary folder — at several sizes, and on each, with the real MobileNetV2 .tflite, embedded, as a user runs it:

  first run (3 classes, every photo through the model) · second run (3 other classes: no model) · dry run ·
  status GET of a job (`imgclassify serve`) · the served results page (bytes) and a search on it · the front page ·
  undo of the second run · `imgclassify jobs` · the folder's store after the 3 jobs (bytes)

and prints JSON: each measure per size, its growth exponent (log time ratio / log size ratio, between each pair of
consecutive sizes and first to last) and each step's peak memory (the process's max RSS), with the machine.

  .venv/bin/python bench/scale.py [--sizes 1000 5000 20000] [--big] [--code DIR] [--out bench/results/scale.json]

`--big` adds 50,000 and 200,000. `--code DIR` measures another checkout's common/ and imgclassify/ (e.g.
`git archive <commit> common imgclassify | tar -x -C DIR`), the same way. Needs a quiet machine: the figures are
wall times of commands sharing the CPUs with anything else running.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from urllib.parse import quote

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.machine import describe, emit  # noqa: E402

SHARED = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared"))
WEIGHTS = SHARED / "models/mobilenet_v2/tf2_mobilenet_v2_1.0_224_ptq.tflite"
SOURCES = ("imagenet-dev", "coral", "flowers-dev", "skimage")
FIRST, SECOND, DRY = ["dogs", "cats", "food"], ["birds", "cars", "flowers"], ["trucks", "boats", "fruit"]
# The CLI's own entry point from the checkout measured, saying its peak RSS as it exits.
CLI = ("import atexit, importlib, resource, sys; sys.path.insert(0, sys.argv.pop(1)); "
       "usage = lambda: resource.getrusage(resource.RUSAGE_SELF); "
       "atexit.register(lambda: print('PEAK_RSS_KB', usage().ru_maxrss, usage().ru_utime + usage().ru_stime, "
       "file=sys.__stderr__)); "
       "cli = importlib.import_module('imgclassify.cli.main'); sys.exit(getattr(cli, '_main', cli.main)(None))")
STATUS_POLLS = 40

_pictures: list[Image.Image] = []


# --- the libraries ----------------------------------------------------------------------------------------------
def _load_sources() -> list[Image.Image]:
    pictures = []
    for folder in SOURCES:
        for path in sorted((SHARED / "photos" / folder).iterdir()):
            try:
                with Image.open(path) as image:
                    image = image.convert("RGB")
                    image.thumbnail((720, 720))
                    pictures.append(image.copy())
            except OSError:
                continue  # COPYRIGHT and other files that are not photos
    return pictures


def relative_name(index: int) -> str:
    """Nested as a camera roll: ~100 photos per event folder, 12 months, years."""
    return f"{2010 + index // 24000}/{(index // 2000) % 12 + 1:02d}/event-{(index // 100) % 20:02d}/IMG_{index:06d}.jpg"


def _variant(index: int) -> bytes:
    rng = random.Random(index)
    picture = _pictures[index % len(_pictures)]
    width, height = picture.size
    crop_w, crop_h = int(width * rng.uniform(0.8, 1.0)), int(height * rng.uniform(0.8, 1.0))
    left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
    variant = picture.crop((left, top, left + crop_w, top + crop_h))
    variant.thumbnail((rng.randint(560, 640),) * 2)
    from io import BytesIO

    buffer = BytesIO()
    variant.save(buffer, "JPEG", quality=rng.randint(82, 95))
    return buffer.getvalue()


def _write_range(pool: str, start: int, stop: int) -> list[str]:
    digests = []
    for index in range(start, stop):
        data = _variant(index)
        path = Path(pool) / relative_name(index)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        digests.append(hashlib.md5(data).hexdigest())
    return digests


def _initialise() -> None:
    global _pictures
    _pictures = _load_sources()


def build_pool(pool: Path, count: int, workers: int = 2) -> dict[str, float]:
    """count distinct photos in pool (made once; a later, larger call adds the missing ones)."""
    have = sum(1 for _ in pool.rglob("*.jpg")) if pool.exists() else 0
    started = time.perf_counter()
    if have < count:
        step = 500
        with ProcessPoolExecutor(workers, initializer=_initialise) as executor:
            chunks = executor.map(_write_range, [str(pool)] * len(range(have, count, step)),
                                  range(have, count, step), [min(s + step, count) for s in range(have, count, step)])
            digests = [d for chunk in chunks for d in chunk]
        assert len(set(digests)) == len(digests), "two variants with the same bytes"
    return {"photos": count, "built_s": round(time.perf_counter() - started, 1)}


def library(pool: Path, root: Path, count: int) -> int:
    """DIR/all holding the first `count` photos of the pool (hard links: the same bytes, no copy); its bytes."""
    total = 0
    for index in range(count):
        target = root / "all" / relative_name(index)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.link(pool / relative_name(index), target)
        total += target.stat().st_size
    return total


# --- the measures -----------------------------------------------------------------------------------------------
def command(code: Path, *args: str) -> tuple[float, float, int, str]:
    """(wall seconds, CPU seconds, peak RSS MB, stdout) of one `imgclassify` command in its own process. The CPU
    time is what to compare on a machine others are using: wall time there includes waiting for a core."""
    started = time.perf_counter()
    process = subprocess.run([sys.executable, "-c", CLI, str(code), *args], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if process.returncode not in (0, 1):
        raise RuntimeError(f"imgclassify {' '.join(args)} exited {process.returncode}: {process.stderr[-2000:]}")
    said = [line.split() for line in process.stderr.splitlines() if line.startswith("PEAK_RSS_KB ")]
    peak, cpu = (int(said[-1][1]) // 1024, float(said[-1][2])) if said else (0, math.nan)
    return elapsed, cpu, peak, process.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _timed_get(session: requests.Session, url: str) -> tuple[float, int]:
    started = time.perf_counter()
    answer = session.get(url, timeout=300)
    answer.raise_for_status()
    return (time.perf_counter() - started) * 1000, len(answer.content)


def served(code: Path, root: Path, job_id: str) -> dict[str, object]:
    """Status, the results page, a search and the front page, from `imgclassify serve` over the folder."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", CLI, str(code), "serve", str(root), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        session = requests.Session()
        for _ in range(600):
            try:
                session.get(base + "/classification-job/0000", timeout=2)
                break
            except requests.ConnectionError:
                if server.poll() is not None:
                    raise RuntimeError(f"serve exited: {server.stderr.read()[-2000:]}") from None  # type: ignore
                time.sleep(0.1)
        status = sorted(_timed_get(session, f"{base}/classification-job/{job_id}")[0] for _ in range(STATUS_POLLS))
        page_ms, page_bytes = _timed_get(session, f"{base}/classification-job/{job_id}/report")
        search_ms, search_bytes = _search(session, base, job_id)
        index_ms, index_bytes = _timed_get(session, base + "/")
        return {"status_ms_p50": round(statistics.median(status), 2), "status_ms_p95": round(status[-3], 2),
                "page_bytes": page_bytes, "page_ms": round(page_ms, 1), "search_ms": round(search_ms, 1),
                "search_bytes": search_bytes, "index_ms": round(index_ms, 1), "index_bytes": index_bytes}
    finally:
        server.terminate()
        server.wait(timeout=60)


def _search(session: requests.Session, base: str, job_id: str) -> tuple[float, int]:
    """What the page asks for a keystroke: the first page of matches of a one-letter search in the unmatched."""
    url = f"{base}/classification-job/{job_id}/results?section={quote('section:unmatched')}&q=e&offset=0&limit=60"
    try:
        return _timed_get(session, url)
    except requests.HTTPError:  # a checkout without the endpoint: its page filtered in the browser
        return math.nan, 0


def store_bytes(root: Path) -> dict[str, int]:
    state = root / ".imgclassify"
    database = sum(p.stat().st_size for p in state.glob("jobs.sqlite3*"))
    logs = sum(p.stat().st_size for p in state.glob("log.jsonl*"))
    return {"database_bytes": database, "log_bytes": logs}


def measure(code: Path, pool: Path, work: Path, size: int) -> dict[str, object]:
    root = work / f"library-{size}"
    photo_bytes = library(pool, root, size)
    model = ["--weights", str(WEIGHTS)]
    row: dict[str, object] = {"photos": size, "photo_bytes": photo_bytes}

    def step(name: str, *args: str) -> str:
        seconds, cpu, peak, out = command(code, *args)
        row[f"{name}_s"], row[f"{name}_cpu_s"], row[f"{name}_peak_mb"] = round(seconds, 2), round(cpu, 2), peak
        print(f"{size}: {name} {seconds:.2f} s ({cpu:.2f} s CPU), {peak} MB, load {os.getloadavg()[0]:.1f}",
              file=sys.stderr, flush=True)
        return out

    first = json.loads(step("first_run", "run", str(root), "--classes", *FIRST, *model, "--json"))
    row["first_run_img_s"] = round(size / row["first_run_s"], 1)  # type: ignore[operator]
    second = json.loads(step("second_run", "run", str(root), "--classes", *SECOND, "--json"))
    row["second_run_from_store"] = second["from_store"]
    step("dry_run", "run", str(root), "--classes", *DRY, "--dry-run", "--json")
    row.update(served(code, root, first["id"]))
    row.update(store_bytes(root))
    step("undo", "undo", str(root), second["id"])
    step("jobs", "jobs", str(root))
    shutil.rmtree(root)
    return row


def exponents(rows: list[dict[str, object]]) -> dict[str, dict[str, float]]:
    """Each measure's growth exponent: log(value ratio) / log(size ratio), per consecutive pair and overall."""
    keys = [k for k in rows[0] if k != "photos" and isinstance(rows[0][k], (int, float)) and "peak" not in k]
    grown: dict[str, dict[str, float]] = {}
    pairs = list(zip(rows, rows[1:])) + ([(rows[0], rows[-1])] if len(rows) > 2 else [])
    for key in keys:
        for small, large in pairs:
            a, b = small.get(key), large.get(key)
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 and b > 0:
                ratio = math.log(b / a) / math.log(large["photos"] / small["photos"])  # type: ignore[operator]
                grown.setdefault(key, {})[f"{small['photos']}->{large['photos']}"] = round(ratio, 2)
    return grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 20000])
    parser.add_argument("--big", action="store_true", help="add 50,000 and 200,000")
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    parser.add_argument("--pool", type=Path, help="keep the built photos here, to reuse them (default: a temp dir)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    sizes = sorted(set(args.sizes + ([50_000, 200_000] if args.big else [])))
    work = Path(tempfile.mkdtemp(prefix="imgclassify-scale-"))
    pool = args.pool or work / "pool"
    try:
        built = build_pool(pool, max(sizes))
        print(f"library pool: {built}", file=sys.stderr, flush=True)
        rows = [measure(args.code.resolve(), pool, work, size) for size in sizes]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    emit({"machine": describe(), "code": str(args.code), "load_average_after": [round(v, 2) for v in load],
          "pool": built, "sizes": rows, "growth_exponents": exponents(rows),
          "note": "wall seconds of each command in its own process (start included); peak_mb: its max RSS. "
                  "Photos: distinct re-encoded variants of the shared photos, 560-640 px JPEG."}, args.out)


if __name__ == "__main__":
    main()
