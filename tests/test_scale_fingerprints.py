"""A folder's fingerprints cached by stat (issue 31): a second listing gives the fingerprint of every photo
unchanged since it was read, without reading it; any stat change, a link, or a change in the second it was hashed
(git's racy rule) gives none, so the photo is read and hashed again."""
from __future__ import annotations

import os
import time
from pathlib import Path
from unittest import mock

import pytest

from common.adapters.local import FolderObjectStore, SqliteJobStore
from common.adapters.local import fingerprints
from common.domain.predictions import content_fingerprint


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "dir"
    for index in range(12):
        path = root / "all" / f"sub{index % 3}" / f"p{index:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"photo %d" % index)
        os.utime(path, ns=(time.time_ns() - 10**10, time.time_ns() - 10**10))  # changed 10 s ago
    SqliteJobStore(root / ".imgclassify/jobs.sqlite3").close()  # a folder with jobs has its database
    return root


def _store(root: Path) -> FolderObjectStore:
    return FolderObjectStore(root, sources={"all/": root / "all"})


def _listed(store: FolderObjectStore) -> dict[str, str | None]:
    return {listed.name: listed.content for listed in store.list_objects("local", "all/")}


def _read_everything(store: FolderObjectStore) -> None:
    for name in _listed(store):
        store.read("local", name)


def test_a_second_listing_fingerprints_what_was_read_without_reading_it(folder):
    first = _store(folder)
    assert set(_listed(first).values()) == {None}
    _read_everything(first)
    first.close()
    second = _store(folder)
    with mock.patch.object(FolderObjectStore, "_read", side_effect=AssertionError("read")):
        listed = _listed(second)
    assert listed == {name: content_fingerprint((folder / name).read_bytes()) for name in listed}
    assert len(listed) == 12


def test_any_change_of_stat_drops_the_fingerprint(folder):
    store = _store(folder)
    _listed(store)
    _read_everything(store)
    store.close()
    (folder / "all/sub0/p00.jpg").write_bytes(b"other bytes")  # size and times
    os.utime(folder / "all/sub1/p01.jpg", ns=(10**18, 10**18))  # a time only, same bytes: hashed again anyway
    os.replace(folder / "all/sub2/p02.jpg", folder / "all/sub2/p05.jpg")  # another file at p05 (inode)
    (folder / "all/sub2/p02.jpg").write_bytes(b"photo 2")
    listed = _listed(_store(folder))
    assert listed["all/sub0/p00.jpg"] is listed["all/sub1/p01.jpg"] is listed["all/sub2/p05.jpg"] is None
    assert listed["all/sub2/p02.jpg"] is None  # a new file with the old bytes: not known until read
    assert listed["all/sub0/p03.jpg"] == content_fingerprint(b"photo 3")


def test_a_photo_hashed_in_the_second_it_changed_is_hashed_again(folder):
    photo = folder / "all/sub0/p00.jpg"
    photo.write_bytes(b"just written")  # its times: now
    store = _store(folder)
    _listed(store)
    store.read("local", "all/sub0/p00.jpg")
    store.close()
    assert _listed(_store(folder))["all/sub0/p00.jpg"] is None  # racy: read again, and recorded again
    later = time.time_ns() + 2 * 10**9
    with mock.patch("common.adapters.local.files.now_ns", return_value=later):
        store = _store(folder)
        _listed(store)
        store.read("local", "all/sub0/p00.jpg")
        store.close()
    with mock.patch.object(FolderObjectStore, "_read", side_effect=AssertionError("read")):
        assert _listed(_store(folder))["all/sub0/p00.jpg"] == content_fingerprint(b"just written")


def test_the_racy_rule_itself():
    status = os.stat_result((0o100644, 7, 1, 1, 0, 0, 10, 0, 0, 0, 0.0, 0.0, 0.0, 5 * 10**9 + 3, 5 * 10**9 + 3,
                             5 * 10**9 + 3))
    recorded = (10, 5 * 10**9 + 3, 5 * 10**9 + 3, 7, 1)
    assert not fingerprints.trusted(recorded, 5 * 10**9 + 900_000_000, status)  # the same second
    assert not fingerprints.trusted(recorded, 6 * 10**9 + 50_000_000, status)  # within a clock tick of it
    assert fingerprints.trusted(recorded, 6 * 10**9 + 200_000_000, status)
    assert not fingerprints.trusted((11, *recorded[1:]), 9 * 10**9, status)  # another size


def test_links_and_folders_without_a_database_get_no_fingerprint(folder, tmp_path):
    (folder / "all/link.jpg").symlink_to(folder / "all/sub0/p00.jpg")
    store = _store(folder)
    _listed(store)
    _read_everything(store)
    store.close()
    listed = _listed(_store(folder))
    assert listed["all/link.jpg"] is None and listed["all/sub0/p00.jpg"] is not None
    plain = tmp_path / "plain"
    (plain / "all").mkdir(parents=True)
    (plain / "all/a.jpg").write_bytes(b"a")
    store = _store(plain)
    _read_everything(store)
    assert _listed(store) == {"all/a.jpg": None} and not (plain / ".imgclassify").exists()


def test_a_process_that_only_reads_records_nothing(folder):
    reader = _store(folder)  # report, status: read previews, never list
    reader.read("local", "all/sub0/p00.jpg")
    reader.close()
    assert set(_listed(_store(folder)).values()) == {None}
