"""The emulated bucket as a folder (`imgclassify emulate --mount DIR`): rclone (Debian's `rclone`, with `fuse3`)
mounts fake-gcs-server's bucket through FUSE, so a program that only knows folders — the old downloader-uploader,
unchanged — writes the photos the pipeline sorts (`DIR/all/x.jpg` is the object `all/x.jpg`) and reads the copies
classify_image makes (`DIR/<class>/`). Deployed, Cloud Run's Cloud Storage volume (Cloud Storage FUSE) is the same
arrangement. The flags and what they cost are in docs/pipeline.md.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from imgclassify.cli.options import UsageError

# --vfs-cache-mode off: a file's bytes stream to the object and close() returns once it is written, so a download
# job that says "complete" has its objects in the bucket (with a write cache, rclone would upload them seconds
# later, after the next job listed all/). Python's open(path, "w+b") works in this mode (rclone treats a truncating
# read-write open as a write). --dir-cache-time 1s: a class folder classify_image just wrote is listed within a
# second (GCS offers rclone no change notifications to poll).
RCLONE_FLAGS = ("--vfs-cache-mode", "off", "--dir-cache-time", "1s", "--attr-timeout", "1s", "--gcs-anonymous",
                "--gcs-bucket-policy-only", "--no-modtime")


@dataclass
class BucketMount:
    folder: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        """Unmount (the kernel's view first, so nothing is left mounted), then end rclone."""
        if os.path.ismount(self.folder):
            subprocess.run([_fusermount(), "-u", str(self.folder)], capture_output=True, timeout=30, check=False)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def _fusermount() -> str:
    return shutil.which("fusermount3") or shutil.which("fusermount") or "fusermount3"


def mount_bucket(storage_host: str, bucket: str, folder: Path, log_dir: Path, timeout: float = 30) -> BucketMount:
    """Mount gs://bucket of the emulator at `storage_host` (STORAGE_EMULATOR_HOST) on `folder` (made if missing,
    empty if it exists)."""
    if shutil.which("rclone") is None:
        raise UsageError("--mount needs rclone and FUSE: apt-get install rclone fuse3")
    if not Path("/dev/fuse").exists():
        raise UsageError("--mount needs FUSE (/dev/fuse is missing: in a container, run it with --device /dev/fuse)")
    folder.mkdir(parents=True, exist_ok=True)
    if os.path.ismount(folder) or any(folder.iterdir()):
        raise UsageError(f"--mount {folder} is not an empty folder")
    log_path = log_dir / "rclone.log"
    argv = ["rclone", "mount", f":gcs:{bucket}", str(folder), "--gcs-endpoint",
            f"{storage_host.rstrip('/')}/storage/v1/", *RCLONE_FLAGS, "--log-file", str(log_path), "-v"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    while not os.path.ismount(folder):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-1500:] if log_path.exists() else ""
            mounted = BucketMount(folder, process, log_path)
            mounted.stop()
            raise UsageError(f"rclone could not mount gs://{bucket} on {folder}: {tail.strip() or 'no output'}")
        time.sleep(0.1)
    # all/ before anything is in it (the downloader-uploader writes into it, never makes it): a folder made through
    # the mount stays in rclone's view until objects fill it (fake-gcs-server keeps no `all/` placeholder object).
    (folder / "all").mkdir(exist_ok=True)
    return BucketMount(folder, process, log_path)

