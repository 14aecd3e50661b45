"""The attack on served "full photo" links, end to end: `imgclassify serve` over a folder of hostile images (a 40-Mpx
16-bit PNG, a 40-Mpx float TIFF, a 24-Mpx progressive JPEG), a job over them, then 8 `…/thumbnail?size=full`
requests at once for each image while a client polls the job's status. Reports the server's peak RSS above its
resting RSS, what each request got, and the status latency meanwhile. Prints JSON.

    .venv/bin/python bench/preview_flood.py [--code DIR] [--out bench/results/preview-flood.json]

`--code DIR` runs another checkout's `common/` and `imgclassify/` (e.g. `git archive HEAD~2 common imgclassify |
tar -x -C DIR`), to measure before and after the same way.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.decode_memory import _textured  # noqa: E402
from bench.machine import describe, emit  # noqa: E402

WEIGHTS = Path(os.environ.get("SHARED_DIR", ROOT.parent / "shared")) / \
    "models/mobilenet_v2/tf2_mobilenet_v2_1.0_224_ptq.tflite"
# The CLI's own entry point, without the printable-stream wrapper main() adds since 2467c94 (with it, serve whose
# stdout is not a terminal stops at start: its log set-up closes the wrapped stdout).
SERVE = ("import importlib, sys; sys.path.insert(0, sys.argv.pop(1)); "
         "cli = importlib.import_module('imgclassify.cli.main'); sys.exit(getattr(cli, '_main', cli.main)(None))")


def make_folder(folder: Path, side: int) -> list[str]:
    photos = folder / "all"
    photos.mkdir(parents=True)
    Image.fromarray(_textured(side, side, 1, np.uint16)).save(photos / "gray16.png")
    Image.fromarray(_textured(side, side, 1, np.float32)).save(photos / "float.tif", compression="tiff_deflate")
    Image.fromarray(_textured(6000, 4000, 3)).save(photos / "progressive24.jpg", quality=85, progressive=True)
    return sorted(f"all/{p.name}" for p in photos.iterdir())


def _kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def flood(base: str, job_id: str, name: str, at_once: int) -> dict[str, object]:
    """at_once full-photo requests for name, a status poll every 100 ms meanwhile."""
    latencies: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            requests.get(f"{base}/classification-job/{job_id}", timeout=120)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.1)

    poller = threading.Thread(target=poll)
    poller.start()
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(at_once) as pool:
        answers = list(pool.map(lambda _: requests.get(f"{base}/classification-job/{job_id}/thumbnail", params={
            "name": name, "size": "full"}, timeout=300), range(at_once)))
    seconds = time.perf_counter() - started
    stop.set()
    poller.join()
    statuses = sorted({f"{a.status_code} {a.headers.get('Content-Type', '')}" for a in answers})
    return {"answers": statuses, "seconds": round(seconds, 2),
            "message": next((a.json().get("message") for a in answers if a.headers.get("Content-Type", "").startswith(
                "application/json")), None),
            "status_ms": {"p50": round(statistics.median(latencies) * 1000, 1),
                          "max": round(max(latencies) * 1000, 1), "polls": len(latencies)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--code", type=Path, default=ROOT)
    parser.add_argument("--side", type=int, default=6320)
    parser.add_argument("--at-once", type=int, default=8)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        names = make_folder(Path(folder), args.side)
        port = _free_port()
        log = open(Path(folder) / "serve.log", "w")
        server = subprocess.Popen([sys.executable, "-c", SERVE, str(args.code), "serve", folder, "--port", str(port),
                                   "--weights", str(WEIGHTS)], cwd=args.code, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                if server.poll() is not None:
                    raise SystemExit("serve stopped: " + (Path(folder) / "serve.log").read_text()[-2000:])
                try:
                    requests.get(base + "/classification-job/" + "0" * 32, timeout=2)
                    break
                except requests.ConnectionError:
                    time.sleep(0.2)
            job = requests.post(base + "/classification-job", json={"classes": ["dog"]}, timeout=60).json()
            while not requests.get(f"{base}/classification-job/{job['id']}", timeout=60).json()["complete"]:
                time.sleep(0.5)
            rows = {}
            for name in names:
                Path(f"/proc/{server.pid}/clear_refs").write_text("5")  # the peak from here on
                resting = _kb(server.pid, "VmRSS")
                outcome = flood(base, job["id"], name, args.at_once)
                rows[name] = {"server_peak_mb": round((_kb(server.pid, "VmHWM") - resting) / 1024, 1), **outcome}
        finally:
            server.terminate()
            server.wait(timeout=30)
    emit({"benchmark": "preview_flood", "machine": describe(), "code": str(args.code), "at_once": args.at_once,
          "images": rows}, args.out)


if __name__ == "__main__":
    main()
