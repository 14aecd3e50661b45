"""The embedded service against real-world folders: nothing the user had is ever changed, every job finishes or
says why, and nothing hangs (issue 14). Real files on disk, the real folder and SQLite adapters, a fake model."""
from __future__ import annotations

import dataclasses
import os
import stat
import threading

import pytest

from common import bootstrap
from common.adapters.local import InProcessQueue, SqliteJobStore, file_errors
from common.config import Settings
from common.domain.options import Backend
from common.domain.errors import ConfigurationError, PermanentImageError, TransientError
from common.domain.status import JobView
from tests.fakes import FakeClassifier, InlineWork, solid_jpeg

RED_CAT = solid_jpeg("red")  # the fake model sees a tabby: "cat" matches


class Folder:
    """DIR with the embedded use cases over it, built by the composition root as `imgclassify run` builds them, with
    a fake model, a quick queue and callbacks sent inline."""

    def __init__(self, root, photos=None, settings: dict | None = None, **overrides) -> None:
        self.root = root
        self.classifier = FakeClassifier()
        self.queue = InProcessQueue(workers=2, backoff=0.01, max_attempts=2)
        config = Settings(backend=Backend.LOCAL, local_root=str(root), local_photos=str(photos or ""),
                          bucket="local", **(settings or {}))
        from common.inference.decoding import decode_image

        model = bootstrap.Inference(classifier=lambda: self.classifier, model_key="fake-model", decode=decode_image,
                                    detector=None, detector_key=None)
        ports = dataclasses.replace(bootstrap.local_ports(config, self.queue), inference=model,
                                    background=overrides.pop("background", InlineWork()), **overrides)
        self.app = bootstrap.local_app(config, ports=ports, queue=self.queue)
        self.objects = self.app.ports.objects
        self.jobs = self.app.ports.jobs
        self.classify = self.app.classify_image
        self.create = self.app.create_job
        self.resume = self.app.resume_job
        self.status = self.app.job_status

    def run(self, classes, **body) -> JobView:
        job = self.create({"classes": classes, **body})
        assert self.queue.join(timeout=60), "the job hung"
        return self.status(job.id)

    def results(self, job_id: str) -> dict:
        return {r.name: r for r in self.jobs.results(job_id)}


def put(path, data=RED_CAT) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def snapshot(root) -> dict[str, bytes]:
    """Every file under root outside the service's state folder (links not followed)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() and not p.is_symlink() else b"<link>")
            for p in root.rglob("*") if ".imgclassify" not in p.parts and (p.is_file() or p.is_symlink())}


def test_a_users_file_with_the_photos_name_is_kept_and_the_copy_gets_a_new_name(tmp_path):
    put(tmp_path / "all/IMG_0001.jpg")
    put(tmp_path / "cat/IMG_0001.jpg", b"my notes about the cat")
    folder = Folder(tmp_path)

    status = folder.run(["cat"])

    assert status.complete and status.matches["cat"] == 1
    assert (tmp_path / "cat/IMG_0001.jpg").read_bytes() == b"my notes about the cat"
    assert (tmp_path / "cat/IMG_0001 (1).jpg").read_bytes() == RED_CAT
    assert folder.results(status.id)["all/IMG_0001.jpg"].copies == ("cat/IMG_0001 (1).jpg",)


def test_a_second_job_from_another_source_never_overwrites_the_first_jobs_copy(tmp_path):
    put(tmp_path / "all/IMG_0001.jpg")
    put(tmp_path / "phone/IMG_0001.jpg", solid_jpeg("red", size=(80, 60)))
    folder = Folder(tmp_path)
    folder.run(["cat"])
    first = (tmp_path / "cat/IMG_0001.jpg").read_bytes()

    second = folder.run(["cat"], source_prefix="phone/")

    assert (tmp_path / "cat/IMG_0001.jpg").read_bytes() == first == RED_CAT
    assert folder.results(second.id)["phone/IMG_0001.jpg"].copies == ("cat/IMG_0001 (1).jpg",)


def test_copies_keep_the_originals_mode_and_modification_time(tmp_path):
    put(tmp_path / "all/a.jpg")
    os.chmod(tmp_path / "all/a.jpg", 0o644)
    os.utime(tmp_path / "all/a.jpg", ns=(1_600_000_000_000_000_000, 1_500_000_000_000_000_000))

    Folder(tmp_path).run(["cat"])

    copy = (tmp_path / "cat/a.jpg").stat()
    assert stat.S_IMODE(copy.st_mode) == 0o644 and copy.st_mtime_ns == 1_500_000_000_000_000_000


def test_a_class_folder_that_is_a_link_into_the_photos_is_refused_and_no_original_changes(tmp_path):
    put(tmp_path / "all/sub/a.jpg")
    put(tmp_path / "all/sub/b.jpg", solid_jpeg("red", size=(10, 10)))
    (tmp_path / "cat").symlink_to(tmp_path / "all/sub")
    before = snapshot(tmp_path / "all")

    status = Folder(tmp_path).run(["cat"])

    assert (status.complete, status.counters.failed, status.counters.processed) == (True, 2, 0)
    assert snapshot(tmp_path / "all") == before
    reasons = {r.reason for r in Folder(tmp_path).results(status.id).values()}
    assert len(reasons) == 1 and next(iter(reasons)).startswith("cat is a symbolic link")


def test_a_class_name_that_is_an_existing_file_fails_its_images_with_a_reason(tmp_path):
    put(tmp_path / "all/a.jpg")
    put(tmp_path / "cat", b"a file called cat")

    folder = Folder(tmp_path)
    status = folder.run(["cat"])

    assert (status.complete, status.counters.failed) == (True, 1)
    assert "cat exists and is not a folder" in folder.results(status.id)["all/a.jpg"].reason
    assert (tmp_path / "cat").read_bytes() == b"a file called cat"


def test_special_files_loops_and_odd_names_never_hang_and_every_image_finishes(tmp_path):
    put(tmp_path / "all/good.jpg")
    os.mkfifo(tmp_path / "all/pipe.jpg")  # reading it would block forever
    (tmp_path / "all/loop.jpg").symlink_to(tmp_path / "all/loop.jpg")
    put(tmp_path / os.fsdecode(b"all/caf\xe9-latin1.jpg"))  # a name that is not UTF-8
    put(tmp_path / "all/notes.eps", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")
    with open(tmp_path / "all/video.mp4", "wb") as video:  # 100 MB, sparse: refused by size, never read
        video.truncate(100 * 1024 * 1024)

    folder = Folder(tmp_path)
    done = threading.Event()
    outcome = {}
    worker = threading.Thread(target=lambda: (outcome.update(folder.run(["cat"]).to_dict()), done.set()), daemon=True)
    worker.start()
    assert done.wait(60), "the job hung"

    results = folder.results(outcome["id"])
    assert "all/pipe.jpg" not in results  # pipes, sockets and devices are not photos: not listed
    assert (outcome["complete"], outcome["number_of_files"]) == (True, 5)
    assert outcome["processed"] + outcome["failed"] == outcome["number_of_files"]
    assert results["all/good.jpg"].ok and results[os.fsdecode(b"all/caf\xe9-latin1.jpg")].ok
    assert "Too many levels of symbolic links" in results["all/loop.jpg"].reason
    assert results["all/notes.eps"].reason.startswith("not a recognised image format")
    assert "above the 67108864-byte limit" in results["all/video.mp4"].reason


def test_a_folder_that_cannot_be_listed_is_counted_as_failed_not_skipped(tmp_path, monkeypatch):
    put(tmp_path / "all/a.jpg")
    put(tmp_path / "all/private/b.jpg")
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path).endswith("private"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)  # root reads everything: deny the way a user's disk would
    folder = Folder(tmp_path)
    status = folder.run(["cat"])

    assert (status.complete, status.number_of_files, status.counters.failed) == (True, 2, 1)
    assert folder.results(status.id)["all/private"].reason == "folder all/private could not be listed: " \
                                                               "Permission denied"


def test_errors_reading_files_are_permanent_unless_they_may_pass():
    with pytest.raises(PermanentImageError, match="Permission denied"):
        with file_errors("cannot read", "all/a.jpg"):
            raise PermissionError(13, "Permission denied")
    with pytest.raises(TransientError):
        with file_errors("cannot read", "all/a.jpg"):
            raise BlockingIOError(11, "Resource temporarily unavailable")


def test_an_image_that_keeps_failing_transiently_is_failed_with_the_reason_and_the_job_finishes(tmp_path,
                                                                                                monkeypatch):
    put(tmp_path / "all/a.jpg")
    put(tmp_path / "all/b.jpg")
    folder = Folder(tmp_path)
    real_read = folder.objects.read

    def flaky_read(bucket, name):
        if name == "all/b.jpg":
            raise TransientError("disk busy")
        return real_read(bucket, name)

    monkeypatch.setattr(folder.objects, "read", flaky_read)
    status = folder.run(["cat"])

    assert (status.complete, status.counters.processed, status.counters.failed) == (True, 1, 1)
    assert folder.results(status.id)["all/b.jpg"].reason == "gave up after 2 attempts: disk busy"


def test_photos_added_before_a_resume_are_counted_so_the_counts_add_up(tmp_path):
    for i in range(3):
        put(tmp_path / f"all/{i}.jpg")
    folder = Folder(tmp_path)
    job = folder.run(["cat"])
    for i in range(3, 5):
        put(tmp_path / f"all/{i}.jpg")

    assert folder.resume(job.id) == (3, 2)
    assert folder.queue.join(timeout=30)
    status = folder.status(job.id)
    assert (status.number_of_files, status.counters.processed + status.counters.failed, status.complete) == (5, 5, True)


def test_photos_behind_a_link_or_in_any_folder_are_sorted_into_the_output_only(tmp_path):
    photos = tmp_path / "Pictures"
    put(photos / "2024/a.jpg")
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked/all").symlink_to(photos)  # DIR/all as a link: a common setup
    before = snapshot(photos)

    linked = Folder(tmp_path / "linked").run(["cat"])
    elsewhere = Folder(tmp_path / "sorted", photos=photos).run(["cat"])  # run PHOTOS --out SORTED

    assert (linked.counters.processed, elsewhere.counters.processed) == (1, 1)
    assert (tmp_path / "linked/cat/2024/a.jpg").read_bytes() == (tmp_path / "sorted/cat/2024/a.jpg").read_bytes()
    assert snapshot(photos) == before


def test_a_corrupt_job_database_is_a_configuration_error_saying_what_to_do(tmp_path):
    database = tmp_path / "jobs.sqlite3"
    database.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ConfigurationError, match="move it aside"):
        SqliteJobStore(database)
