"""A folder as the bucket: photos are read from the source folders, copies written (and removed) under the root.

Every write and every removal walks the path one folder at a time from an open descriptor of the root, refusing
to follow a symbolic link at any component (O_NOFOLLOW), so that replacing a class folder by a link after a job
— to all/, or outside the folder — can never make undo delete, or a copy land, where the link points.
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import secrets
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

from common.adapters.local.fingerprints import DATABASE, FingerprintCache, Walked, now_ns
from common.adapters.local.state import StateFolder, tidy
from common.domain.errors import ObjectMissing, PermanentImageError, TransientError
from common.domain.jobs import MAX_IMAGE_BYTES, STATE_DIR, collision_names
from common.domain.predictions import content_fingerprint
from common.ports import Copied, Listed, Removal

# Deeper folders are not listed: each is one failed entry saying why, and the job goes on.
MAX_FOLDER_DEPTH = 64
# The local equivalents of a cloud 503: the disk or the database is busy or full for now.
TRANSIENT_ERRNOS = frozenset({errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ENOSPC, errno.EDQUOT, errno.EMFILE,
                              errno.ENFILE, errno.ETIMEDOUT, errno.ESTALE, errno.ENOMEM})
PARTIAL = "partial-"  # the temporary files' prefix: the tidy-up removes only these
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@contextlib.contextmanager
def file_errors(operation: str, name: str) -> Iterator[None]:
    """The retry policy at the folder boundary: busy/full becomes TransientError, a missing file ObjectMissing,
    anything else about this file (permissions, a loop, an undecodable name) its permanent failure."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise ObjectMissing(name) from None
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise TransientError(f"{operation} {name}: {exc.strerror}") from exc
        raise PermanentImageError(f"{operation} {name}: {exc.strerror or exc}") from exc


def file_identity(status: os.stat_result) -> str:
    """Which file this is: its device and inode, and its change time (a file renamed away and back, or replaced
    by another with the same bytes, is another)."""
    return f"{status.st_dev}:{status.st_ino}:{status.st_ctime_ns}"


def name_parts(name: str) -> list[str]:
    """An object name's folders and file; a name that could climb or alias ('..', '.', '//') names nothing."""
    parts = name.split("/")
    if any(part in ("", ".", "..") or "\x00" in part for part in parts):
        raise ObjectMissing(name)
    return parts


def _links_to_folder(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir()
    except OSError:  # a loop: listed, and failed with its reason when read
        return False


class LinkInPath(PermanentImageError):
    """A folder on the way is a symbolic link (or not a folder): nothing is written or removed through it."""


class FolderPath:
    """Open descriptors of the folders from root down to one folder, none reached through a link."""

    def __init__(self, root: Path, parts: list[str], create: bool) -> None:
        self.fds = [os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)]
        self.parts = parts
        try:
            for depth, part in enumerate(parts):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, dir_fd=self.fds[-1])
                try:
                    self.fds.append(os.open(part, _DIRECTORY, dir_fd=self.fds[-1]))
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    relative = "/".join(parts[:depth + 1])
                    is_link = stat.S_ISLNK(os.lstat(part, dir_fd=self.fds[-1]).st_mode)
                    raise LinkInPath(f"{relative} is a symbolic link: nothing is written or removed through links "
                                     "(make it a real folder)" if is_link else
                                     f"{relative} exists and is not a folder: rename it or choose another class "
                                     "name") from None
        except BaseException:
            self.close()
            raise

    @property
    def fd(self) -> int:
        return self.fds[-1]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def __enter__(self) -> FolderPath:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def remove_empty_folders(self) -> None:
        """rmdir each folder from the deepest up while it is empty; never the root (rmdir does not follow links)."""
        for depth in range(len(self.parts), 0, -1):
            try:
                os.rmdir(self.parts[depth - 1], dir_fd=self.fds[depth - 1])
            except OSError:
                return


class FolderObjectStore:
    """Objects are files under root; names use '/' whatever the OS. The bucket name is ignored: root is the bucket.

    `sources` maps a prefix to the folder its photos are read from (`all/` -> the folder `DIR/all` points to, or
    the PHOTOS of `run PHOTOS --out SORTED`): photos may live behind a link or elsewhere, copies are only ever
    written under root, never through a symbolic link, never into a source folder, and never over a file that
    holds other bytes. Only regular files are listed and read; sizes are checked before reading.
    """

    def __init__(self, root: str | os.PathLike[str], sources: Mapping[str, str | os.PathLike[str]] | None = None,
                 max_bytes: int = MAX_IMAGE_BYTES) -> None:
        self.root = Path(root).resolve()
        self.sources = {prefix: Path(folder).resolve() for prefix, folder in (sources or {}).items()}
        self.max_bytes = max_bytes
        self._unlistable: dict[str, str] = {}  # folders the listing could not enter, and why
        self._tmp_fd: int | None = None
        self._tmp_lock = threading.Lock()
        self._fingerprints: FingerprintCache | None | bool = False  # False: not opened yet

    def close(self) -> None:
        with self._tmp_lock:
            if self._tmp_fd is not None:
                os.close(self._tmp_fd)
                self._tmp_fd = None
            if isinstance(self._fingerprints, FingerprintCache):
                self._fingerprints.close()
            self._fingerprints = None

    def _cache(self) -> FingerprintCache | None:
        """The folder's fingerprints by stat, opened on first use when the folder has a database."""
        with self._tmp_lock:
            if self._fingerprints is False:
                self._fingerprints = FingerprintCache.of_folder(self.root / STATE_DIR / DATABASE, self)
            return self._fingerprints if isinstance(self._fingerprints, FingerprintCache) else None

    def __del__(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.close()

    def _tmp(self) -> int:
        """Files are written here, then linked into place: a killed run leaves no half photo, and no stray
        temporary file, in the user's folders. Same filesystem as root, so the link is atomic. Made on the first
        write (a folder only read from, such as `emulate --upload`'s, is left as it is), through the state folder's
        boundary: a link at .imgclassify or at tmp is refused, never followed, and the tidy-up of leftovers older
        than any write in flight removes only this folder's own regular files."""
        with self._tmp_lock:
            if self._tmp_fd is None:
                with StateFolder(self.root / STATE_DIR) as state:
                    self._tmp_fd = state.subfolder("tmp")
                tidy(self._tmp_fd, PARTIAL, older_than=600)
            return self._tmp_fd

    def _partial(self, data: bytes, like: os.stat_result | None = None) -> str:
        """A new file in tmp holding data (mode and times from `like`): its name there."""
        tmp = self._tmp()
        name = f"{PARTIAL}{secrets.token_hex(8)}"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=tmp)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if like is not None:
                os.fchmod(handle.fileno(), stat.S_IMODE(like.st_mode))
                handle.flush()
                os.utime(handle.fileno(), ns=(like.st_atime_ns, like.st_mtime_ns))
        return name

    def _drop_partial(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self._tmp())

    # --- reading --------------------------------------------------------------------------------------------
    def local_path(self, name: str) -> Path:
        """Where an object is on this machine (a results file links its full photo there). Raises ObjectMissing
        for a name that would lead outside the folders."""
        return self._readable_path(name)

    def _source(self, name: str) -> tuple[Path, Path]:
        """(folder the name is read from, path of the name in it)."""
        for prefix, folder in self.sources.items():
            if name.startswith(prefix):
                return folder, folder.joinpath(*name_parts(name[len(prefix):]))
        return self.root, self.root.joinpath(*name_parts(name))

    def _prefix_folder(self, prefix: str) -> Path:
        for source_prefix, folder in self.sources.items():
            if prefix.startswith(source_prefix):
                rest = prefix[len(source_prefix):].strip("/")
                return folder.joinpath(*name_parts(rest)) if rest else folder
        rest = prefix.strip("/")
        return self.root.joinpath(*name_parts(rest)) if rest else self.root

    def _readable_path(self, name: str) -> Path:
        base, path = self._source(name)
        resolved = Path(os.path.realpath(path))  # a link loop resolves to itself here; opening it says why
        if not (resolved.is_relative_to(base) or resolved.is_relative_to(self.root)) or resolved == self.root:
            raise ObjectMissing(name)  # names come from messages: never let one point outside the folders
        return path

    def list_names(self, bucket: str, prefix: str) -> Iterator[str]:
        """Depth first, sorted, without recursion: any depth lists, folders past MAX_FOLDER_DEPTH fail as one
        entry each. Regular files and links to them (a broken or looping link fails with its reason when read);
        never pipes, sockets or devices, which would block or mean nothing; never folder links."""
        return (name for name, _ in self._walk(prefix))

    def _walk(self, prefix: str) -> Iterator[Walked]:
        """list_names, each name with its directory entry (None for a folder that failed)."""
        try:
            top = self._prefix_folder(prefix)
        except ObjectMissing:
            return
        if not top.is_dir():
            return
        pending: list[tuple[Path, str, int]] = [(top, prefix, 0)]
        while pending:
            folder, name_prefix, depth = pending.pop()
            try:
                with os.scandir(folder) as scan:
                    entries = sorted(scan, key=lambda entry: entry.name)
            except OSError as error:
                if depth == 0:
                    return
                self._unlistable[name_prefix.rstrip("/")] = error.strerror or str(error)
                yield name_prefix.rstrip("/"), None
                continue
            folders = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry)
                elif entry.is_file(follow_symlinks=False) or entry.is_symlink() and not _links_to_folder(entry):
                    yield name_prefix + entry.name, entry
            for entry in reversed(folders):
                if depth + 1 > MAX_FOLDER_DEPTH:
                    self._unlistable[name_prefix + entry.name] = (f"nested more than {MAX_FOLDER_DEPTH} folders "
                                                                  "deep: not listed")
                    yield name_prefix + entry.name, None
                else:
                    pending.append((Path(entry.path), f"{name_prefix}{entry.name}/", depth + 1))

    def list_objects(self, bucket: str, prefix: str) -> Iterator[Listed]:
        """With the fingerprint of each photo unchanged since this folder's store read it (fingerprints.py); the
        others are read and hashed by whoever needs their bytes."""
        cache = self._cache()
        if cache is None:
            return (Listed(name) for name in self.list_names(bucket, prefix))
        return cache.listed(self._walk(prefix))

    def read(self, bucket: str, name: str) -> bytes:
        opened = now_ns()
        data, status = self._read(name)
        cache = self._cache()
        if cache is not None and cache.recording:  # what was read is remembered by its stat when read
            cache.record(self._source(name)[1], status, content_fingerprint(data), opened)
        return data

    def exists(self, bucket: str, name: str) -> bool:
        try:
            folder, filename = self._folder(name, create=False)
        except (ObjectMissing, LinkInPath, OSError):
            return False
        with folder:
            try:
                return stat.S_ISREG(os.stat(filename, dir_fd=folder.fd, follow_symlinks=False).st_mode)
            except OSError:
                return False

    def _read(self, name: str) -> tuple[bytes, os.stat_result]:
        if name in self._unlistable:
            raise PermanentImageError(f"folder {name} could not be listed: {self._unlistable[name]}")
        path = self._readable_path(name)
        with file_errors("cannot read", name):
            # Non-blocking: opening a FIFO for reading must not wait for a writer.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as handle:
                status = os.fstat(handle.fileno())
                if stat.S_ISDIR(status.st_mode):
                    raise PermanentImageError(f"{name} is a folder")
                if not stat.S_ISREG(status.st_mode):
                    raise PermanentImageError(f"{name} is not a regular file (a pipe, socket or device)")
                if status.st_size > self.max_bytes:
                    raise PermanentImageError(f"file is {status.st_size} bytes, above the {self.max_bytes}-byte "
                                              "limit for an image")
                data = handle.read(self.max_bytes + 1)
        if len(data) > self.max_bytes:  # it grew while being read
            raise PermanentImageError(f"file is larger than the {self.max_bytes}-byte limit for an image")
        return data, status

    # --- writing and removing -------------------------------------------------------------------------------
    def _folder(self, name: str, create: bool) -> tuple[FolderPath, str]:
        """The open folder that name's file goes in (no link on the way, not a source folder), and the file name."""
        parts = name_parts(name)
        folder = FolderPath(self.root, parts[:-1], create)
        real = self.root.joinpath(*parts[:-1])  # no link was followed to reach it: this is where it is
        if any(real.is_relative_to(source) for source in self.sources.values()):
            folder.close()
            raise LinkInPath(f"{name} would be written among the photos")
        return folder, parts[-1]

    def _create(self, folder: int, filename: str, data: bytes, like: os.stat_result | None) -> str | None:
        """Write the file only if nothing is there: its identity, or None if something is there. Mode and times
        follow `like`."""
        partial = self._partial(data, like)
        try:
            # Atomic, and fails if the name exists (a link included): never replaces or follows anything.
            os.link(partial, filename, src_dir_fd=self._tmp(), dst_dir_fd=folder, follow_symlinks=False)
        except FileExistsError:
            return None
        finally:
            self._drop_partial(partial)
        return file_identity(os.stat(filename, dir_fd=folder, follow_symlinks=False))

    @staticmethod
    def _holds(folder: int, filename: str, data: bytes) -> bool:
        try:
            fd = os.open(filename, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder)
        except OSError:
            return False  # a link, or gone
        with os.fdopen(fd, "rb") as handle:
            status = os.fstat(handle.fileno())
            return stat.S_ISREG(status.st_mode) and status.st_size == len(data) and handle.read() == data

    def copy(self, bucket: str, source: str, target: str, content: str | None = None) -> Copied:
        data, status = self._read(source)  # the bytes are needed to write the copy: the hint saves nothing here
        with file_errors("cannot copy to", target):
            folder, _ = self._folder(target, create=True)
            with folder:
                for candidate in collision_names(target):
                    filename = candidate.rpartition("/")[2]
                    # A copy already there with these bytes (an earlier job's, or delivery's) is looked at before
                    # anything is written: a second question over a sorted library writes no temporary file.
                    if self._holds(folder.fd, filename, data):
                        return Copied(candidate, written=False)
                    identity = self._create(folder.fd, filename, data, status)
                    if identity is not None:
                        return Copied(candidate, written=True, identity=identity)
                    if self._holds(folder.fd, filename, data):  # written meanwhile, by a concurrent delivery
                        return Copied(candidate, written=False)
        raise PermanentImageError(f"{len(collision_names(target))} different files are already named like {target}:"
                                  " none is replaced")

    def write(self, bucket: str, name: str, data: bytes) -> None:
        """Upload (tests, `emulate --upload`): replaces name, but never through a link."""
        with file_errors("cannot write", name):
            folder, filename = self._folder(name, create=True)
            with folder:
                partial = self._partial(data)
                try:  # replaces a link itself, never its target
                    os.replace(partial, filename, src_dir_fd=self._tmp(), dst_dir_fd=folder.fd)
                finally:
                    self._drop_partial(partial)

    def remove(self, bucket: str, name: str, content: str, identity: str = "") -> Removal:
        try:
            folder, filename = self._folder(name, create=False)
        except ObjectMissing:
            return Removal.MISSING
        except LinkInPath:
            return Removal.UNSAFE
        except FileNotFoundError:
            return Removal.MISSING
        with folder, file_errors("cannot remove", name):
            try:
                fd = os.open(filename, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder.fd)
            except FileNotFoundError:
                return Removal.MISSING
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    return Removal.UNSAFE
                raise
            with os.fdopen(fd, "rb") as handle:
                status = os.fstat(handle.fileno())
                if not stat.S_ISREG(status.st_mode) or (identity and file_identity(status) != identity) or \
                        content_fingerprint(handle.read()) != content:
                    return Removal.CHANGED
            os.unlink(filename, dir_fd=folder.fd)
            folder.remove_empty_folders()  # the class folders the removal left empty go too
        return Removal.REMOVED
