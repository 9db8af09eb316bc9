"""Opening checkpoint files safely: regular files only, never blocking, confined when asked.

Every read of a file that came with a checkpoint (safetensors headers and data, index JSON,
torch files, ``model_index.json``, ``refs/main``, ``SHA256SUMS``, configs) opens it here:

- with ``O_NONBLOCK`` first, so a FIFO named ``model.safetensors`` cannot block the open, then
  ``fstat`` on the *descriptor*: anything but a regular file (FIFO, device, socket, directory) is
  refused naming the file, before a byte is read; ``O_NONBLOCK`` is then cleared;
- under confinement (:func:`confinement`), the opened descriptor's real path
  (``/proc/self/fd/N``) must lie under the checkpoint root. The check is on what was opened, not
  on a path looked at earlier, so swapping a file for an outside link between the check and the
  open cannot slip outside bytes in;
- ``OSError`` (missing, dangling link, link loop, name too long, permission denied, I/O error)
  becomes a typed :class:`~ckptkit.errors.CkptError` naming the file.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from ckptkit.errors import CkptError, CorruptCheckpointError, IncompleteCheckpointError, UnsafeCheckpointError
from ckptkit.format.hub_paths import dangling_link_fix

__all__ = [
    "confinement",
    "confinement_root",
    "file_identity",
    "held_path",
    "lexists",
    "open_regular",
    "open_regular_file",
    "os_error",
    "quote_content",
    "read_capped",
    "read_text_capped",
    "regular_file_problem",
]

_ROOT: contextvars.ContextVar[str | None] = contextvars.ContextVar("ckptkit_confinement_root", default=None)

_KINDS = (
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def as_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a :class:`~pathlib.Path`, the same object when it already is one (``Path(path)``
    parses it again: about 3 us each on Python 3.11, a few times per file of a load)."""
    return path if isinstance(path, Path) else Path(path)


@contextlib.contextmanager
def confinement(root: str | os.PathLike[str] | None) -> Iterator[None]:
    """Within the block, :func:`open_regular` refuses files whose real path leaves ``root``.

    ``None`` leaves the current setting as it is (so a verb can always wrap its body).

    Example:
        >>> with confinement(ckpt.root):  # doctest: +SKIP
        ...     header = read_header(ckpt.weight_files[0])
    """
    if root is None:
        yield
        return
    token = _ROOT.set(os.path.realpath(root))
    try:
        yield
    finally:
        _ROOT.reset(token)


def confinement_root() -> str | None:
    """The real path files must stay under in the current context, or ``None``."""
    return _ROOT.get()


def _kind(mode: int) -> str | None:
    if stat.S_ISREG(mode):  # the usual case, in one test
        return None
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _refuse_kind(path: Path, kind: str) -> CkptError:
    if kind == "a directory":
        return CorruptCheckpointError("is a directory, not a file", path=path)
    return UnsafeCheckpointError(
        f"is {kind}, not a regular file; reading it could block forever or never end",
        path=path,
        fix="replace it with the real file",
    )


def _os_error(path: Path, exc: OSError) -> CkptError:
    code = exc.errno
    reason = os.strerror(code) if code else str(exc)
    if code == errno.ENOENT:
        if os.path.islink(path):
            return IncompleteCheckpointError(
                f"link points to {quote_content(os.readlink(path))}, which does not exist",
                path=path,
                fix=dangling_link_fix(path),
            )
        return IncompleteCheckpointError(
            "file does not exist", path=path, fix="download or copy the missing file"
        )
    if code == errno.ELOOP:
        return UnsafeCheckpointError(
            "is a link loop (too many levels of symbolic links)",
            path=path,
            fix="replace the link with the file",
        )
    if code == errno.EISDIR:
        return CorruptCheckpointError("is a directory, not a file", path=path)
    if code in (errno.ENOTDIR, errno.ENAMETOOLONG):
        return IncompleteCheckpointError(f"cannot be opened ({reason})", path=path, fix="check the path")
    if code in (errno.EACCES, errno.EPERM):
        return IncompleteCheckpointError(
            f"cannot be read ({reason})", path=path, fix="make the file readable by this user"
        )
    return IncompleteCheckpointError(
        f"cannot be read ({reason})", path=path, fix="check the disk, then copy or download the file again"
    )


def os_error(path: str | os.PathLike[str], exc: OSError) -> CkptError:
    """``exc``, raised while reading ``path``, as the typed error naming the file."""
    return _os_error(Path(path), exc)


def _real_path_of(fd: int, path: Path) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        # No /proc: the real path now, trusted only if it is the very file we hold open.
        real = os.path.realpath(path)
        try:
            if file_identity(os.stat(real)) == file_identity(os.fstat(fd)):
                return real
        except OSError:
            pass
        return ""


def open_regular(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    identity: tuple[int, int] | None = None,
) -> int:
    """A read-only descriptor of ``path``, which must be a regular file (links are followed).

    Args:
        path: the file.
        root: refuse a file whose real path leaves this directory; default: the root of the
            current :func:`confinement`, if any.
        identity: the :func:`file_identity` the file must have (the file a header was read
            from): a file swapped for another since then is refused.

    Returns:
        The descriptor (blocking mode, close-on-exec); the caller closes it.

    Raises:
        UnsafeCheckpointError: a FIFO, device or socket; a link loop; outside the root.
        CorruptCheckpointError: a directory; not the file ``identity`` names.
        IncompleteCheckpointError: missing, a dangling link, or unreadable (the OS reason is given).

    Example:
        >>> fd = open_regular("model.safetensors")  # doctest: +SKIP
    """
    path = as_path(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _os_error(path, exc) from None
    try:
        info = os.fstat(fd)
        kind = _kind(info.st_mode)
        if kind is not None:
            raise _refuse_kind(path, kind)
        if identity is not None and file_identity(info) != tuple(identity):
            raise CorruptCheckpointError(
                "was replaced by another file since its header was read",
                path=path,
                fix="do not change a checkpoint while it is being read; run again",
            )
        limit = os.path.realpath(root) if root is not None else _ROOT.get()
        if limit is not None:
            real = _real_path_of(fd, path)
            if not real or os.path.commonpath([real, limit]) != limit:
                raise UnsafeCheckpointError(
                    f"resolves to {real or 'an unknown place'}, outside the checkpoint root {limit}",
                    path=path,
                    fix="copy the file into the checkpoint (ckptkit materialize), or pass confine=False "
                    "if you trust where the link points",
                )
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except OSError as exc:
        os.close(fd)
        raise _os_error(path, exc) from None
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_regular_file(
    path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None
) -> io.BufferedReader:
    """:func:`open_regular` as a binary file object (``with open_regular_file(p) as handle:``)."""
    return os.fdopen(open_regular(path, root=root), "rb")


def held_path(fd: int, path: str | os.PathLike[str]) -> str:
    """A name that opens exactly the file ``fd`` holds (``/proc/self/fd/N``), for libraries that
    open by name (``safe_open``, ``torch.load(mmap=True)``); ``path`` where there is no ``/proc``."""
    proc = f"/proc/self/fd/{fd}"
    # Asked each time: /proc can be there but closed to this process (after dropping privileges).
    return proc if os.path.exists(proc) else os.fspath(path)


def file_identity(info: os.stat_result) -> tuple[int, int]:
    """``(device, inode)``: which file a descriptor or path is, to notice one swapped for another."""
    return (info.st_dev, info.st_ino)


def read_capped(path: str | os.PathLike[str], cap: int, *, what: str = "file") -> bytes:
    """The whole of a small file, refused unread when it is over ``cap`` bytes.

    Raises:
        CorruptCheckpointError: over the cap (the message gives it), plus :func:`open_regular`'s errors.

    Example:
        >>> raw = read_capped("model.safetensors.index.json", 64 * 2**20, what="index")  # doctest: +SKIP
    """
    path = as_path(path)
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        if size > cap:
            raise CorruptCheckpointError(
                f"{what} is {size} bytes, over the {cap}-byte cap for it; it was not read",
                path=path,
                fix=f"this is not a usual {what}; check where it came from",
            )
        chunks, total = [], 0
        while total <= cap:
            # The size fstat gave (+1 to meet the end), or 64 KiB more if the file grew: not a 1 MiB
            # buffer for a 7 KiB index (a fresh mmap and munmap by malloc on each first read).
            chunk = os.read(fd, min(cap + 1 - total, max(size + 1 - total, 1 << 16)))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > cap:
            raise CorruptCheckpointError(
                f"{what} grew past the {cap}-byte cap for it while being read", path=path
            )
        return b"".join(chunks)
    except OSError as exc:
        raise _os_error(path, exc) from None
    finally:
        os.close(fd)


def read_text_capped(path: str | os.PathLike[str], cap: int, *, what: str = "file") -> str:
    """:func:`read_capped` decoded as UTF-8; other bytes are a :class:`CorruptCheckpointError`."""
    raw = read_capped(path, cap, what=what)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(
            f"{what} is not UTF-8 text (byte {exc.start} of {len(raw)} is not)",
            path=path,
        ) from None


def lexists(path: str | os.PathLike[str]) -> bool:
    """Whether anything (a dangling link included) is at ``path``.

    Raises:
        CkptError: the path cannot be looked at (name too long, permission denied, link loop in
            a parent), naming it, instead of a raw ``OSError``.
    """
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise _os_error(Path(path), exc) from None
    return True


def regular_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` (links followed) is not a readable regular file, without opening it; ``None`` if it is.

    For listings that must say what a thing is: a link to a FIFO or ``/dev/zero`` is "a FIFO",
    "a character device", not "does not exist".
    """
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ENOENT and os.path.islink(path):
            return f"a dangling link to {quote_content(os.readlink(path))}"
        return "missing" if exc.errno == errno.ENOENT else os.strerror(exc.errno or 0)
    return _kind(info.st_mode)


def quote_content(value: str | bytes, limit: int = 32) -> str:
    """A short, escaped prefix of content that is not ours (file text, link targets), for messages."""
    text = repr(value[:limit])
    return text + ("..." if len(value) > limit else "")
