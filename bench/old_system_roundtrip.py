"""The old system's round trip on the emulated bucket mounted through FUSE (issue 32): `imgclassify emulate --mount`
as docs/pipeline.md starts it, the stand-in downloader-uploader working in the mount and a stand-in Dropbox (a
folder) of N photos, the old client's flow — download, classify, upload — timed per step; then what the mount costs
on its own: the same copies into a local folder, a listing and a full read-back of all/ through the mount and from
the local folder. Prints JSON, with the load average before and after (the machine is shared).

  flock /tmp/imgclassify-bench.lock .venv/bin/python bench/old_system_roundtrip.py --photos 300 \
      > bench/results/old-system-roundtrip.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("SHARED_DIR", REPO.parent / "shared"))
TFLITE = SHARED / "models/mobilenet_v2/tf2_mobilenet_v2_1.0_224_ptq.tflite"
IMGCLASSIFY = str(Path(sys.executable).with_name("imgclassify"))
KEY, TOKEN = "bench-key", "dropbox-token"


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def timed(work: Any) -> tuple[float, Any]:
    started = time.monotonic()
    result = work()
    return round(time.monotonic() - started, 3), result


def read_all(folder: Path) -> int:
    return sum(len(path.read_bytes()) for path in folder.iterdir() if path.is_file())


def local_baseline(dropbox: Path, local: Path) -> dict[str, float]:
    """What the stand-in's copy costs without FUSE and without the emulated bucket."""
    from tests.standins.downloader_uploader import DownloaderUploader

    files = sorted((dropbox / "all").iterdir())
    copy_s, _ = timed(lambda: DownloaderUploader._copy(files, local / "all", {}))
    list_s, listed = timed(lambda: os.listdir(local / "all"))
    read_s, size = timed(lambda: read_all(local / "all"))
    return {"download_s": copy_s, "list_all_s": list_s, "listed": len(listed), "read_back_s": read_s,
            "read_back_mb": round(size / 1e6, 1)}


def start_emulate(work: Path, mount: Path, port: int) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SERVICE_KEY", "DEFAULT_MATCH")}
    return subprocess.Popen([IMGCLASSIFY, "emulate", "--port", str(port), "--mount", str(mount), "--model",
                             "mobilenet_v2", "--weights", str(TFLITE)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=work)


def wait_mounted(emulate: Any, port: int, mount: Path) -> float:  # wait_for_http types it as bytes
    from imgclassify.emulation import wait_for_http

    started = time.monotonic()
    wait_for_http(f"http://127.0.0.1:{port}/classification-job/{'0' * 32}", 300, emulate)
    while not os.path.ismount(mount) or not (mount / "all").is_dir():
        if emulate.poll() is not None or time.monotonic() - started > 360:
            raise RuntimeError("the bucket was not mounted")
        time.sleep(0.2)
    return round(time.monotonic() - started, 1)


def round_trip(mount: Path, dropbox: Path, port: int, classes: list[str]) -> dict[str, Any]:
    """The old client's three steps, each until complete (the upload until every upload job is)."""
    from imgclassify.emulation import free_port
    from tests.standins.downloader_uploader import DownloaderUploader, serve_in_thread
    from tests.standins.old_client import OldClient

    standin = DownloaderUploader(mount, dropbox, KEY, TOKEN)
    uploader_port = free_port()
    server = serve_in_thread(standin.app, uploader_port)
    try:
        client = OldClient(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{uploader_port}", KEY, TOKEN,
                           interval=0.1, timeout=1800)
        steps: dict[str, Any] = {}
        for kind in ("download", "classification", "upload"):
            seconds, job = timed(lambda kind=kind: client.step(kind, classes))
            steps[kind] = {"s": seconds, "job": job}
        waited, _ = timed(lambda: wait_until(lambda: all(j["complete"] for j in standin.jobs.values())))
        steps["upload"]["s"] = round(steps["upload"]["s"] + waited, 3)
    finally:
        server.shutdown()
    return steps


def wait_until(done: Any) -> None:
    while not done():
        time.sleep(0.05)


def checked(mount: Path, dropbox: Path, classes: list[str]) -> dict[str, int]:
    """Per class, the copies that reached the stand-in Dropbox: the mount's class folder, byte for byte."""
    sent = {}
    for name in classes:
        folder = dropbox / name
        names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        in_mount = {p.name for p in (mount / name).iterdir()} if (mount / name).is_dir() else set()
        if names != in_mount or any((folder / n).read_bytes() != (dropbox / "all" / n).read_bytes() for n in names):
            raise AssertionError(f"{name}: Dropbox has {len(names)}, the mount {len(in_mount)}, or bytes differ")
        sent[name] = len(names)
    return sent


def fuse_costs(mount: Path) -> dict[str, Any]:
    time.sleep(1.5)  # past the mount's 1 s directory cache: a listing that asks the bucket
    list_s, listed = timed(lambda: os.listdir(mount / "all"))
    read_s, size = timed(lambda: read_all(mount / "all"))
    return {"list_all_s": list_s, "listed": len(listed), "read_back_s": read_s, "read_back_mb": round(size / 1e6, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--classes", nargs="+", default=["dog", "cat", "bird", "car"])
    args = parser.parse_args()
    from imgclassify.emulation import free_port

    photos = sorted((SHARED / "photos/imagenet-dev").iterdir())[:args.photos]
    report: dict[str, Any] = {"photos": len(photos), "classes": args.classes, "cpus": os.cpu_count(),
                              "loadavg_before": loadavg(), "model": "mobilenet_v2 LiteRT int8 (tf2 ptq)"}
    with tempfile.TemporaryDirectory(prefix="old-system-bench-") as tmp:
        work = Path(tmp)
        dropbox, mount, local = work / "dropbox", work / "bucket", work / "local"
        (dropbox / "all").mkdir(parents=True)
        for path in photos:
            shutil.copy(path, dropbox / "all" / path.name)
        report["dropbox_mb"] = round(sum(p.stat().st_size for p in photos) / 1e6, 1)
        report["local_folder"] = local_baseline(dropbox, local)
        (work / ".env").write_text(f"SERVICE_KEY={KEY}\n")
        port = free_port()
        emulate = start_emulate(work, mount, port)
        try:
            report["emulate_start_s"] = wait_mounted(emulate, port, mount)
            steps = round_trip(mount, dropbox, port, args.classes)
            classification = steps["classification"]["job"]
            report["round_trip_s"] = {kind: step["s"] for kind, step in steps.items()}
            report["classified"] = {k: classification.get(k) for k in ("number_of_files", "processed", "failed")}
            report["matches"] = classification.get("matches")
            report["copies_in_dropbox"] = checked(mount, dropbox, args.classes)
            report["mount"] = fuse_costs(mount)
        finally:
            emulate.send_signal(signal.SIGINT)
            emulate.communicate(timeout=120)
        report["unmounted"] = not os.path.ismount(mount)
    report["loadavg_after"] = loadavg()
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
