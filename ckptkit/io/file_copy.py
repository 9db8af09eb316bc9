"""Copying files into an output: streaming byte ranges, never read whole; symlinks always followed;
every source opened through :func:`~ckptkit.format.safe_files.open_regular`."""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from ckptkit.format.safe_files import open_regular
from ckptkit.io.byte_copy import copy_range

__all__ = ["copy_file", "link_or_copy", "walk_files"]


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


def walk_files(root: str | os.PathLike[str], *, exclude: tuple[str, ...] = ()) -> Iterator[tuple[str, Path]]:
    """Every file under ``root`` as ``(relative posix path, path)``, sorted, following symlinks.

    Directories named in ``exclude`` (at any depth) are skipped. A directory reached through links
    under two names is walked under each (``tokenizer_2 -> tokenizer`` is two folders of files); only
    a directory that is one of its own ancestors (a link cycle) is not walked again.

    Raises:
        IncompleteCheckpointError: a link dangles.
    """
    root = Path(root)

    def walk(
        directory: Path, prefix: str, ancestors: frozenset[tuple[int, int]]
    ) -> Iterator[tuple[str, Path]]:
        info = directory.stat()
        if (info.st_dev, info.st_ino) in ancestors:
            return
        ancestors = ancestors | {(info.st_dev, info.st_ino)}
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            path = Path(entry.path)
            rel = f"{prefix}{entry.name}"
            if entry.is_dir():  # follows links
                if entry.name not in exclude:
                    yield from walk(path, rel + "/", ancestors)
            elif entry.is_file():
                yield rel, path
            else:
                # A dangling link, FIFO, socket or device: open_regular names what it is (without
                # blocking); a file that became regular meanwhile is yielded.
                os.close(open_regular(path))
                yield rel, path

    yield from walk(root, "", frozenset())
