"""The lock that serializes writers of one destination: per user, with a timeout that names the holder."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ckptkit.errors import DestinationExistsError

__all__ = ["LOCK_TIMEOUT_ENV", "destination_lock"]

logger = logging.getLogger("ckptkit")


#: Environment variable: seconds a writer waits for another writer of the same destination
#: before giving up (default: it waits as long as the other one takes).
LOCK_TIMEOUT_ENV = "CKPTKIT_LOCK_TIMEOUT"


def _lock_directory() -> Path:
    """This user's lock directory in the temp dir (``ckptkit-locks-<uid>``, mode 0700).

    Per user, so another user cannot hold (or plant) a lock that blocks this one's writes.
    """
    uid = os.getuid() if hasattr(os, "getuid") else 0
    directory = Path(tempfile.gettempdir()) / f"ckptkit-locks-{uid}"
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != uid):
        raise DestinationExistsError(
            "is not a directory owned by this user, so ckptkit cannot keep its write locks there",
            path=directory,
            fix="remove it, or point TMPDIR at a private directory",
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(directory, 0o700)
    return directory


@contextmanager
def destination_lock(destination: Path) -> Iterator[None]:
    """Hold the lock serializing writers of ``destination`` (per user; see :func:`_lock_directory`).

    The lock file lives in the temp directory, named by a hash of the destination, so no lock
    file is left beside the output (where uploads such as ``aws s3 sync`` would pick it up). The
    holder writes its pid beside it, so a writer that waits can say whom it waits for.
    """
    from filelock import FileLock, Timeout

    key = hashlib.sha256(
        os.fsencode(os.path.realpath(destination.parent)) + b"/" + os.fsencode(destination.name)
    ).hexdigest()[:32]
    directory = _lock_directory()
    lock = FileLock(str(directory / f"{key}.lock"), mode=0o600)
    holder = directory / f"{key}.holder"
    timeout = _lock_timeout()
    waited = 0.0
    while True:
        step = 5.0 if timeout is None else max(0.0, min(5.0, timeout - waited))
        try:
            lock.acquire(timeout=step)
            break
        except Timeout:
            waited += step
            who = _holder(holder)
            if timeout is not None and waited >= timeout:
                raise DestinationExistsError(
                    f"another writer ({who}) has held its lock for over {timeout:g} s",
                    path=destination,
                    fix=f"wait for it to finish or stop it; {LOCK_TIMEOUT_ENV} sets how long to wait",
                ) from None
            logger.warning("%s: waiting for another writer (%s) to finish", destination, who)
    try:
        with contextlib.suppress(OSError):
            fd = os.open(holder, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            try:
                os.write(fd, f"{os.getpid()}".encode())
            finally:
                os.close(fd)
        yield
    finally:
        with contextlib.suppress(OSError):
            holder.unlink()
        lock.release()


def _lock_timeout() -> float | None:
    raw = os.environ.get(LOCK_TIMEOUT_ENV, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{LOCK_TIMEOUT_ENV}={raw!r} must be a number of seconds (>= 0)")
    return value


def _holder(path: Path) -> str:
    try:
        text = path.read_bytes()[:16].decode("ascii", "replace").strip()
    except OSError:
        return "a process that did not say its pid"
    return f"pid {text}" if text.isdigit() else "a process that did not say its pid"
