"""job_status latency under 50 concurrent pollers against the local server (`imgclassify serve`).

  .venv/bin/python bench/status.py --pollers 50 --seconds 10 > bench/results/status.json
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from imgclassify.emulation import free_port, wait_for_http  # noqa: E402

TFLITE = REPO.parent / "shared/models/mobilenet_v2/tf2_mobilenet_v2_1.0_224_ptq.tflite"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--interval", type=float, default=0.2,
                        help="pause between one poller's requests (the old client polled every 0.2 s); 0 = flat out")
    parser.add_argument("--during-job", action="store_true",
                        help="start polling at once, while the job's images are still being classified")
    parser.add_argument("--photos", type=Path, default=REPO.parent / "shared/photos/coral")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="status-bench-"))
    shutil.copytree(args.photos, root / "all")
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).with_name("imgclassify")), "serve", str(root), "--port",
                               str(port), "--model", "mobilenet_v2", "--weights", str(TFLITE)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}/classification-job"
    try:
        wait_for_http(f"{base}/{'0' * 32}", 60, server)
        job = requests.post(base, json={"classes": ["dogs", "cats"]}, timeout=30).json()
        url = f"{base}/{job['id']}"
        while not args.during_job and not requests.get(url, timeout=10).json()["complete"]:
            time.sleep(0.2)
        latencies: list[float] = []
        errors = 0
        lock = threading.Lock()
        stop = time.monotonic() + args.seconds

        def poll() -> None:
            nonlocal errors
            session = requests.Session()
            mine = []
            while time.monotonic() < stop:
                t = time.perf_counter()
                response = session.get(url, timeout=10)
                mine.append(time.perf_counter() - t)
                if response.status_code != 200:
                    with lock:
                        errors += 1
                if args.interval:
                    time.sleep(args.interval)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=poll) for _ in range(args.pollers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ms = sorted(x * 1000 for x in latencies)
        print(json.dumps({
            "server": "imgclassify serve (embedded: SQLite job store, werkzeug threaded)",
            "pollers": args.pollers, "interval_s": args.interval, "during_job": args.during_job, "seconds": args.seconds, "requests": len(ms), "errors": errors,
            "requests_per_second": round(len(ms) / args.seconds), "p50_ms": round(statistics.median(ms), 2),
            "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 2), "max_ms": round(ms[-1], 2),
            "job_complete_at_end": requests.get(url, timeout=10).json()["complete"],
        }, indent=2))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
