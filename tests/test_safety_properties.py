"""Issue 28, proved by generated attacks: random sequences of run / undo / correct / report / settings writes / hand
moves, with links, FIFOs and swapped folders placed at random points of DIR and of its state folder, on the real
folder and SQLite adapters (a fake model). After every step:

- no file that is not one of a job's live copies was removed or changed (the photos, the user's own files, and
  everything outside DIR);
- nothing was written outside DIR, and nothing through a link;
- the manifest equals the copies on disk: every copy a job owns that the user did not touch is there with the
  photo's bytes, and every file the service wrote under DIR is owned by a job that is not undone.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from common import bootstrap
from common.domain.errors import ClientError, ServiceError
from common.domain.predictions import content_fingerprint
from tests.fakes import solid_jpeg
from tests.test_real_folders import Folder

PHOTOS = {"all/red.jpg": solid_jpeg("red"), "all/green.jpg": solid_jpeg("green"),
          "all/trip/blue.jpg": solid_jpeg("blue"), "all/trip/red2.jpg": solid_jpeg("red", size=(60, 40))}
CLASSES = ("cat", "dog", "bird", "pets")
# Where links and FIFOs go: the state folder's own files and folders, and the class folders copies go to.
STATE_SPOTS = ("tmp", "log.jsonl", "events.jsonl", "settings.json", "lock", "jobs.sqlite3-wal",
               "jobs.sqlite3-journal")
CLASS_SPOTS = ("cat", "dog", "bird", "pets", "cat/trip", "dog/trip")


def _tree(root: Path) -> dict[str, bytes | str]:
    """Every entry under root (links and FIFOs as what they are, never followed), the state folder left out."""
    found: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        dirnames[:] = [d for d in dirnames if d != ".imgclassify" and not (base / d).is_symlink()]
        for name in filenames + [d for d in os.listdir(base) if (base / d).is_symlink() and d not in filenames]:
            path = base / name
            key = path.relative_to(root).as_posix()
            if path.is_symlink():
                found[key] = f"link->{os.readlink(path)}"
            elif path.is_fifo():
                found[key] = "fifo"
            elif path.is_file():
                found[key] = path.read_bytes()
    return found


class FolderUnderAttack(RuleBasedStateMachine):
    @initialize()
    def make_folder(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="attack-"))
        self.root = self.base / "dir"
        self.outside = self.base / "outside"
        for name, data in PHOTOS.items():
            (self.root / name).parent.mkdir(parents=True, exist_ok=True)
            (self.root / name).write_bytes(data)
        (self.outside / "keep").mkdir(parents=True)
        (self.outside / "keep/notes.txt").write_bytes(b"the user's notes")
        (self.outside / "keep/red.jpg").write_bytes(PHOTOS["all/red.jpg"])  # same bytes as a photo
        self.folder = Folder(self.root)
        self.jobs: list[str] = []
        self.user_files: dict[str, bytes | str] = {}  # placed or changed by hand: never the service's to touch
        self.once_written: dict[str, bytes] = {}  # every path a job wrote a copy at, and the photo's bytes
        self.outside_before = _tree(self.outside)

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.folder.queue.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def _attempt(self, action) -> object:
        """A use case may refuse (a link in its way, a job in the wrong state): refusing is allowed, harm is not."""
        try:
            return action()
        except (ClientError, ServiceError, OSError):
            return None

    # --- what the user does through the service ----------------------------------------------------------------
    @rule(classes=st.lists(st.sampled_from(CLASSES), min_size=1, max_size=3, unique=True), dry_run=st.booleans())
    def run(self, classes: list[str], dry_run: bool) -> None:
        created = self._attempt(lambda: self.folder.create({"classes": classes, "dry_run": dry_run}))
        assert self.folder.queue.join(timeout=60), "a job hung"
        if created is not None:
            self.jobs.append(created.id)
            for result in self.folder.jobs.results(created.id):
                self.once_written.update({name: PHOTOS[result.name] for name in result.written})

    @rule(pick=st.integers(0, 20))
    def undo(self, pick: int) -> None:
        if self.jobs:
            self._attempt(lambda: self.folder.app.undo_job(self.jobs[pick % len(self.jobs)]))

    @rule(pick=st.integers(0, 20), photo=st.sampled_from(sorted(PHOTOS)), cls=st.sampled_from(CLASSES),
          belongs=st.booleans())
    def correct(self, pick: int, photo: str, cls: str, belongs: bool) -> None:
        if self.jobs:
            body = {"corrections": [{"name": photo, "class": cls, "belongs": belongs}]}
            self._attempt(lambda: self.folder.app.correct_job(self.jobs[pick % len(self.jobs)], body))

    @rule(pick=st.integers(0, 20))
    def report(self, pick: int) -> None:
        if self.jobs:
            self._attempt(lambda: self.folder.app.report(self.jobs[pick % len(self.jobs)]))

    @rule(value=st.sampled_from([b'{"top_k": 3}', b'{"min_score": "nan"}', b"[]", b"\xff"]))
    def write_settings(self, value: bytes) -> None:
        self._attempt(lambda: bootstrap.write_state_file(self.root, "settings.json", value))

    # --- what the user (or another program) does by hand --------------------------------------------------------
    def _copies_on_disk(self) -> list[Path]:
        return sorted(p for c in CLASSES if (self.root / c).is_dir() and not (self.root / c).is_symlink()
                      for p in (self.root / c).rglob("*") if p.is_file() and not p.is_symlink())

    def _no_link_on_the_way(self, path: Path) -> bool:
        return Path(os.path.realpath(path.parent)) == path.parent

    @rule(pick=st.integers(0, 50), to=st.sampled_from(CLASS_SPOTS), how=st.sampled_from(["move", "copy", "edit"]))
    def by_hand(self, pick: int, to: str, how: str) -> None:
        copies = self._copies_on_disk()
        if not copies:
            return
        source = copies[pick % len(copies)]
        target = self.root / to / f"hand-{pick}.jpg"
        if how == "edit":
            target = source
        if not (self._no_link_on_the_way(target) and self._no_link_on_the_way(source)):
            return
        with contextlib.suppress(OSError):
            target.parent.mkdir(parents=True, exist_ok=True)
            data = source.read_bytes() + (b"edited" if how == "edit" else b"")
            if how == "move":
                source.rename(target)
                self.user_files.pop(source.relative_to(self.root).as_posix(), None)
            else:
                target.write_bytes(data)
            self.user_files[target.relative_to(self.root).as_posix()] = data

    @rule(pick=st.integers(0, 50))
    def replace_a_copy_by_the_users_own_with_the_same_bytes(self, pick: int) -> None:
        """The job's copy moved aside (now the user's) and the user's own file, same bytes, put at its path."""
        copies = [c for c in self._copies_on_disk() if c.relative_to(self.root).as_posix() in self.once_written]
        if not copies:
            return
        copy = copies[pick % len(copies)]
        aside = copy.with_name(f"aside-{pick}-{copy.name}")
        if not self._no_link_on_the_way(copy) or aside.exists():
            return
        data = copy.read_bytes()
        copy.rename(aside)
        copy.write_bytes(data)
        for path in (aside, copy):
            self.user_files[path.relative_to(self.root).as_posix()] = data

    @rule(pick=st.integers(0, 50))
    def put_a_photo_back_where_a_job_once_wrote(self, pick: int) -> None:
        """The user's own copy, with the same bytes, at a path a job wrote and may since have undone."""
        names = sorted(n for n in self.once_written if not (self.root / n).exists())
        if names:
            name = names[pick % len(names)]
            if not self._no_link_on_the_way(self.root / name):
                return  # the user writing through their own link elsewhere is theirs to do, not this test's
            with contextlib.suppress(OSError):
                (self.root / name).parent.mkdir(parents=True, exist_ok=True)
                (self.root / name).write_bytes(self.once_written[name])
                self.user_files[name] = self.once_written[name]

    @rule(spot=st.sampled_from(STATE_SPOTS), to=st.sampled_from(["all", "outside", "outside/keep/notes.txt"]),
          fifo=st.booleans())
    def plant_in_state_folder(self, spot: str, to: str, fifo: bool) -> None:
        path = self.root / ".imgclassify" / spot
        target = self.root / "all" if to == "all" else self.base / to
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            os.mkfifo(path) if fifo else path.symlink_to(target)

    @rule(spot=st.sampled_from(CLASS_SPOTS), to=st.sampled_from(["all", "all/trip", "outside/keep"]))
    def swap_class_folder_for_a_link(self, spot: str, to: str) -> None:
        path = self.root / spot
        target = self.root / to if to.startswith("all") else self.base / to
        if not self._no_link_on_the_way(path):
            return  # its folder is a link already: moving through it would be the test moving the user's photos
        with contextlib.suppress(OSError):
            if path.exists() and not path.is_symlink():
                moved = path.with_name(path.name + "-moved")
                shutil.rmtree(moved, ignore_errors=True)
                path.rename(moved)
                for file in moved.rglob("*"):
                    if file.is_file() and not file.is_symlink():
                        self.user_files[file.relative_to(self.root).as_posix()] = file.read_bytes()
            path.symlink_to(target)
            self.user_files[spot] = f"link->{target}"

    # --- what must hold after every step -----------------------------------------------------------------------
    @invariant()
    def photos_and_outside_are_untouched(self) -> None:
        if not hasattr(self, "root"):
            return
        tree = _tree(self.root)
        for name, data in PHOTOS.items():
            assert tree.get(name) == data, f"{name} was changed or removed"
        assert _tree(self.outside) == self.outside_before, "something outside DIR changed"

    @invariant()
    def the_users_own_files_are_untouched(self) -> None:
        if not hasattr(self, "root"):
            return
        tree = _tree(self.root)
        for name, data in self.user_files.items():
            if name in tree:  # a later hand step may have moved it on
                assert tree[name] == data, f"{name}, the user's, was changed"
            elif not isinstance(data, str):
                assert self._moved_on_by_hand(name), f"{name}, the user's, was removed"

    def _moved_on_by_hand(self, name: str) -> bool:
        """A user's file may be gone only because a later hand step moved it or the folder holding it."""
        parts = name.split("/")
        return any((self.root / "/".join(parts[:i])).is_symlink() or
                   (self.root / ("/".join(parts[:i]) + "-moved")).exists() for i in range(1, len(parts) + 1))

    @invariant()
    def every_file_the_service_wrote_is_owned_by_a_live_job(self) -> None:
        if not hasattr(self, "root"):
            return
        jobs = self.folder.jobs
        owned: dict[str, str] = {}
        identities: dict[str, set[str]] = {}
        for job_id in self.jobs:
            if jobs.undone_at(job_id) is not None:
                assert all(not r.written for r in jobs.results(job_id)), "an undone job still owns copies"
                continue
            for result in jobs.results(job_id):
                for name in result.written:
                    owned[name] = result.content
                    identities.setdefault(name, set()).add(result.identities.get(name, ""))
        tree = _tree(self.root)
        for name, data in tree.items():
            if name.startswith("all/") or name in self.user_files or not isinstance(data, bytes):
                continue
            if not any(name.startswith(f"{c}/") for c in CLASSES):
                continue  # a user's folder moved aside ("cat-moved") is theirs
            assert name in owned, f"{name} was written by the service but no live job owns it"
            status = os.stat(self.root / name, follow_symlinks=False)
            assert f"{status.st_dev}:{status.st_ino}:{status.st_ctime_ns}" in identities[name], \
                f"{name} is not the file its job wrote"
        for name, content in owned.items():
            data = tree.get(name)
            if isinstance(data, bytes) and name not in self.user_files:
                assert content_fingerprint(data) == content, f"{name} does not hold the photo its job copied"


# Each example builds a folder and runs a few jobs with a fake model: ~0.1-0.5 s a step on 2 cores.
FolderUnderAttack.TestCase.settings = settings(max_examples=200, stateful_step_count=20, deadline=None,
                                                suppress_health_check=[HealthCheck.too_slow])
test_folder_under_attack = FolderUnderAttack.TestCase
