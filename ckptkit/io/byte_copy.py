"""Moving bytes between files without holding them: ``copy_range``, ``write_all``, ``preallocate``.

``copy_range`` uses ``os.copy_file_range`` (the kernel copies, or shares extents on filesystems
that can), else ``os.sendfile``, else a bounded buffer, so memory use never depends on the length.
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from typing import Any

from ckptkit.errors import CorruptCheckpointError

__all__ = ["COPY_CHUNK", "copy_range", "preallocate", "pwrite_all", "write_all"]

#: Bytes moved per system call: small enough to report progress, large enough to cost nothing.
COPY_CHUNK = 64 * 2**20
#: The bounded buffer used when the kernel cannot copy between the two files.
_BUFFER_SIZE = 8 * 2**20

ProgressFn = Callable[[int], None]
# What copy_file_range/sendfile answer when they cannot copy between these two files (other
# filesystems, old kernels, macOS sendfile wanting a socket): fall back to the next method.
_FALLBACK_ERRNOS = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF, errno.ENOTSOCK)


def pwrite_all(fd: int, data: memoryview | bytes, offset: int) -> None:
    """``os.pwrite`` at ``offset`` until every byte is written."""
    view = memoryview(data).cast("B")
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)


def write_all(fd: int, data: memoryview | bytes) -> None:
    """``os.write`` until every byte is written."""
    view = memoryview(data).cast("B")
    while view:
        written = os.write(fd, view)
        view = view[written:]


def copy_range(
    src_fd: int,
    offset: int,
    length: int,
    dst_fd: int,
    *,
    path: str | os.PathLike[str] | None = None,
    progress: ProgressFn | None = None,
) -> None:
    """Append ``length`` bytes of ``src_fd`` starting at ``offset`` to ``dst_fd`` at its position.

    Uses ``os.copy_file_range`` (the kernel copies, or shares extents on filesystems that can),
    else ``os.sendfile``, else a bounded buffer: memory use never depends on ``length``.

    Raises:
        CorruptCheckpointError: the source ends before ``offset + length``.
    """
    done = 0
    methods = [m for m in (_copy_file_range, _sendfile) if m is not None]
    while done < length:
        count = min(COPY_CHUNK, length - done)
        moved = None
        while methods and moved is None:
            try:
                moved = methods[0](src_fd, dst_fd, offset + done, count)
            except OSError as exc:
                if exc.errno not in _FALLBACK_ERRNOS:
                    raise
                methods.pop(0)
        if moved is None:
            moved = _buffered(src_fd, dst_fd, offset + done, count)
        if moved == 0:
            raise CorruptCheckpointError(
                f"file ended {length - done} bytes early while copying a tensor",
                path=path,
                fix="the file is truncated; download or copy it again",
            )
        done += moved
        if progress is not None:
            progress(moved)


def _cfr(src_fd: int, dst_fd: int, offset: int, count: int) -> int:
    return os.copy_file_range(src_fd, dst_fd, count, offset)


def _sf(src_fd: int, dst_fd: int, offset: int, count: int) -> int:
    return os.sendfile(dst_fd, src_fd, offset, count)


_copy_file_range = _cfr if hasattr(os, "copy_file_range") else None
_sendfile = _sf if hasattr(os, "sendfile") else None


def preallocate(fd: int, size: int, *, path: str | os.PathLike[str] | None = None) -> None:
    """Reserve ``size`` bytes for a new file with ``fallocate(2)``, where the filesystem supports it.

    The disk filling up then shows before anything is copied, and ext4 lays the file out in
    fewer extents (measured faster to fill). Never emulated by writing zeros (as
    ``posix_fallocate`` may be); unsupported filesystems just skip it.

    Raises:
        OSError: ``ENOSPC``, the disk cannot hold the file.
    """
    if size <= 0 or _fallocate is None:
        return
    if _fallocate(fd, 0, ctypes.c_int64(0), ctypes.c_int64(size)) == 0:
        return
    code = ctypes.get_errno()
    if code in (errno.ENOSPC, errno.EDQUOT):
        raise OSError(code, f"no space left for {size} bytes", os.fspath(path) if path is not None else None)


def _libc_fallocate() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate64
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return function


_fallocate = _libc_fallocate() if os.name == "posix" else None


def _buffered(src_fd: int, dst_fd: int, offset: int, count: int) -> int:
    chunk = os.pread(src_fd, min(count, _BUFFER_SIZE), offset)
    write_all(dst_fd, chunk)
    return len(chunk)
