"""Writing outputs so they appear whole or not at all.

An output (a directory or one file) is built in a hidden staging path next to its destination,
synced, and then put in place with one rename: ``renameat2(RENAME_EXCHANGE)`` swaps a new
directory with an existing one atomically; where the filesystem cannot, the old directory is first
renamed aside, and a later run under the same lock puts it back if the process died in between.
Two writers of the same destination are serialized with a ``filelock`` lock.
Files are copied by streaming byte ranges, never read whole; symlinks are always followed.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ckptkit.errors import DestinationExistsError, DiskFullError, IncompleteCheckpointError
from ckptkit.format.safe_files import open_regular
from ckptkit.io.byte_copy import copy_range
from ckptkit.io.locks import destination_lock as _lock

__all__ = [
    "Staging",
    "copy_file",
    "fsync_dir",
    "fsync_tree",
    "link_or_copy",
    "staged_directory",
    "staged_file",
    "walk_files",
]

logger = logging.getLogger("ckptkit")

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_TMP_TAG = ".ckptkit-tmp-"
_OLD_TAG = ".ckptkit-old-"


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (new names, renames) to disk."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: str | os.PathLike[str]) -> None:
    """Flush every directory under ``root`` (files are synced by whoever wrote them)."""
    for directory, _, _ in os.walk(root):
        fsync_dir(directory)


def copy_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    fsync: bool = True,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Copy ``src`` (following links) into a new file ``dst``, streaming; keeps the permission bits."""
    src, dst = Path(src), Path(dst)
    src_fd = open_regular(src)
    try:
        info = os.fstat(src_fd)
        dst_fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            copy_range(src_fd, 0, info.st_size, dst_fd, path=src, progress=progress)
            os.fchmod(dst_fd, stat.S_IMODE(info.st_mode) | stat.S_IRUSR | stat.S_IWUSR)
            if fsync:
                os.fsync(dst_fd)
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)


def link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, fsync: bool = True) -> None:
    """Hard-link a regular file to a new name (same inode, no bytes copied), else copy it.

    Symlinks are never linked: their target's bytes are copied, so the result holds real files.
    """
    src = Path(src)
    if not src.is_symlink():
        try:
            os.link(src, dst, follow_symlinks=False)
            return
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
    copy_file(src, dst, fsync=fsync)


def _dangling(path: Path) -> IncompleteCheckpointError:
    if path.is_symlink():
        return IncompleteCheckpointError(
            f"link points to {os.readlink(path)!r}, which does not exist",
            path=path,
            fix="the download was interrupted or the cache was cleaned; download the file again",
        )
    return IncompleteCheckpointError("file does not exist", path=path, fix="download or copy it again")


def walk_files(root: str | os.PathLike[str], *, exclude: tuple[str, ...] = ()) -> Iterator[tuple[str, Path]]:
    """Every file under ``root`` as ``(relative posix path, path)``, sorted, following symlinks.

    Directories named in ``exclude`` (at any depth) are skipped; a directory reached twice through
    links is walked once.

    Raises:
        IncompleteCheckpointError: a link dangles.
    """
    root = Path(root)
    seen: set[tuple[int, int]] = set()

    def walk(directory: Path, prefix: str) -> Iterator[tuple[str, Path]]:
        info = directory.stat()
        if (info.st_dev, info.st_ino) in seen:
            return
        seen.add((info.st_dev, info.st_ino))
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            path = Path(entry.path)
            rel = f"{prefix}{entry.name}"
            if entry.is_dir():  # follows links
                if entry.name not in exclude:
                    yield from walk(path, rel + "/")
            elif entry.is_file():
                yield rel, path
            else:
                # A dangling link, FIFO, socket or device: open_regular names what it is (without
                # blocking); a file that became regular meanwhile is yielded.
                os.close(open_regular(path))
                yield rel, path

    yield from walk(root, "")


@dataclass
class Staging:
    """A staging path being built; it becomes ``destination`` when the ``with`` block succeeds.

    Attributes:
        path: the hidden staging directory (or file) to write into.
        destination: where it will appear.
        existing: ``destination`` when it already existed (its content stays there until the
            swap), else ``None``.
    """

    path: Path
    destination: Path
    existing: Path | None


@contextmanager
def _new_parents(destination: Path) -> Iterator[None]:
    """Create the missing parents of ``destination``; remove them again if the block fails.

    A refused or failed write leaves no trace, not even the directories it made for its output.
    """
    missing: list[Path] = []
    parent = destination.parent
    while not os.path.lexists(parent) and parent != parent.parent:
        missing.append(parent)
        parent = parent.parent
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        for directory in missing:  # deepest first; a directory someone else filled stays
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        raise


def _leftovers(parent: Path, name: str, tag: str) -> list[Path]:
    """The staging/aside names a killed run left for exactly ``name`` (``.<name><tag><random letters>``).

    Listed and compared, never globbed: a name holding ``*``, ``?`` or ``[`` would match others'.
    """
    pattern = re.compile(re.escape(f".{name}{tag}") + r"[a-z0-9_]+")
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    return [parent / entry for entry in sorted(names) if pattern.fullmatch(entry)]


def _recover(destination: Path) -> None:
    """Finish or undo what a killed run left next to ``destination`` (call with the lock held)."""
    parent, name = destination.parent, destination.name
    for leftover in _leftovers(parent, name, _OLD_TAG):
        if not os.path.lexists(destination):
            logger.warning("putting back %s, left aside by an interrupted run", destination)
            os.rename(leftover, destination)
        else:
            _remove(leftover)
    for leftover in _leftovers(parent, name, _TMP_TAG):
        logger.info("removing %s, left by an interrupted run", leftover)
        _remove(leftover)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _check_destination(destination: Path, *, overwrite: bool, is_dir: bool) -> Path | None:
    if not os.path.lexists(destination):
        return None
    if destination.is_symlink():
        raise DestinationExistsError(
            "is a symbolic link; outputs are written as real files and directories",
            path=destination,
            fix=f"pass the link's target ({os.path.realpath(destination)}) or another path",
        )
    if is_dir and not destination.is_dir():
        raise DestinationExistsError(
            "exists and is not a directory", path=destination, fix="pass a directory path"
        )
    if not is_dir and destination.is_dir():
        raise DestinationExistsError(
            "is a directory; the archive is a file", path=destination, fix="pass a file path"
        )
    empty = is_dir and not any(os.scandir(destination))
    if not overwrite and not empty:
        raise DestinationExistsError(
            "already exists", path=destination, fix="pass overwrite=True (--overwrite) to replace it"
        )
    return destination


def _exchange(a: Path, b: Path) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), os.fspath(b))


@contextmanager
def staged_directory(
    destination: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    fsync: bool = True,
    before_commit: Callable[[Staging], None] | None = None,
) -> Iterator[Staging]:
    """Build a directory in a staging path and put it at ``destination`` in one step.

    Yields a :class:`Staging`; write everything into ``staging.path``. When the block returns,
    every directory in it is synced and it replaces ``destination`` (an existing one is swapped out
    and deleted); when it raises, the staging directory is removed and ``destination`` is untouched.

    Raises:
        DestinationExistsError: ``destination`` exists (not an empty directory) and not ``overwrite``.
        DiskFullError: the disk, quota or file-size limit ran out; staging removed, old output intact.

    Example:
        >>> with staged_directory("out") as staging:  # doctest: +SKIP
        ...     (staging.path / "config.json").write_text("{}")
    """
    destination = Path(os.path.abspath(destination))
    with _new_parents(destination), _lock(destination), _typed_disk_full(destination):
        _recover(destination)
        existing = _check_destination(destination, overwrite=overwrite, is_dir=True)
        path = Path(tempfile.mkdtemp(prefix=f".{destination.name}{_TMP_TAG}", dir=destination.parent))
        try:
            mode = stat.S_IMODE(existing.stat().st_mode) if existing else 0o777 & ~_umask()
            os.chmod(path, mode)
            staging = Staging(path, destination, existing)
            yield staging
            if before_commit is not None:
                before_commit(staging)
            if fsync:
                fsync_tree(path)
            _commit_directory(path, destination, existing)
            if fsync:
                fsync_dir(destination.parent)
        finally:
            if os.path.lexists(path):
                _remove(path)


def _commit_directory(path: Path, destination: Path, existing: Path | None) -> None:
    if existing is None:
        os.rename(path, destination)
        return
    if _exchange(path, destination):
        return  # ``path`` now holds the old directory; the caller removes it
    aside = Path(tempfile.mkdtemp(prefix=f".{destination.name}{_OLD_TAG}", dir=destination.parent))
    os.rmdir(aside)
    os.rename(destination, aside)
    os.rename(path, destination)
    _remove(aside)


@contextmanager
def staged_file(
    destination: str | os.PathLike[str], *, overwrite: bool = False, fsync: bool = True
) -> Iterator[Staging]:
    """Like :func:`staged_directory` for one file: write ``staging.path``, it replaces ``destination``."""
    destination = Path(os.path.abspath(destination))
    with _new_parents(destination), _lock(destination), _typed_disk_full(destination):
        _recover(destination)
        existing = _check_destination(destination, overwrite=overwrite, is_dir=False)
        fd, name = tempfile.mkstemp(prefix=f".{destination.name}{_TMP_TAG}", dir=destination.parent)
        os.close(fd)
        path = Path(name)
        try:
            os.chmod(path, 0o666 & ~_umask())
            yield Staging(path, destination, existing)
            if fsync:
                with open(path, "rb") as handle:
                    os.fsync(handle.fileno())
            os.replace(path, destination)
            if fsync:
                fsync_dir(destination.parent)
        finally:
            if os.path.lexists(path):
                _remove(path)


_FULL_ERRNOS = frozenset(
    code for code in (errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", None)) if code is not None
)


@contextmanager
def _typed_disk_full(destination: Path) -> Iterator[None]:
    """Turn "no space" / "file too large" / "quota" ``OSError`` into :class:`DiskFullError`."""
    try:
        yield
    except DiskFullError:
        raise
    except OSError as exc:
        if exc.errno is None or exc.errno not in _FULL_ERRNOS:
            raise
        raise DiskFullError(
            f"ran out of room while writing ({os.strerror(exc.errno)}); nothing was changed",
            path=destination,
            fix="free space on that disk, raise the quota or file-size limit (ulimit -f), "
            "or write to another disk",
        ) from exc


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
