"""Keeping reads inside a checkpoint: which files' real paths leave its root.

Links are followed by default (hub snapshots are made of them; people link big files in from
other disks). With ``confine=True`` or ``CKPTKIT_CONFINE=1`` a file whose real path lies outside
the checkpoint root is refused before anything is read — for services opening untrusted uploads.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path, PureWindowsPath

from ckptkit.errors import UnsafeCheckpointError
from ckptkit.format.hub_files import hub_repo_root

__all__ = [
    "CONFINE_ENV",
    "checkpoint_root",
    "confine_enabled",
    "enforce_confinement",
    "is_outside",
    "is_relative_name",
]

CONFINE_ENV = "CKPTKIT_CONFINE"


_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"", "0", "false", "no"})


def confine_enabled(confine: bool | None) -> bool:
    """``confine`` when given, else what ``CKPTKIT_CONFINE`` says.

    The variable accepts ``1``/``true``/``yes`` and ``0``/``false``/``no`` (any case) or empty;
    anything else (``2``, ``y``, ``enabled``) is refused rather than silently read as "off".

    Raises:
        ValueError: ``CKPTKIT_CONFINE`` holds another value (the message names the variable).
    """
    if confine is not None:
        return bool(confine)
    raw = os.environ.get(CONFINE_ENV, "")
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"{CONFINE_ENV}={raw[:20]!r} is not understood: use 1/true/yes to confine reads to the checkpoint, "
        "0/false/no (or unset) not to"
    )


def checkpoint_root(path: str | os.PathLike[str]) -> Path:
    """The root links are judged against: ``models--org--name`` for a hub snapshot, else ``path``."""
    return hub_repo_root(path) or Path(os.path.abspath(path))


def _realpath(path: str | os.PathLike[str]) -> str:
    """``os.path.realpath``, typed: a link swapped while it is resolved makes ``readlink`` fail."""
    try:
        return os.path.realpath(path)
    except OSError as exc:
        raise UnsafeCheckpointError(
            f"its links changed while they were being resolved ({os.strerror(exc.errno or 0)})",
            path=path,
            fix="do not change a checkpoint while it is being read; run again",
        ) from None


def is_outside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether the real path of ``path`` (links followed) lies outside the real path of ``root``."""
    real, real_root = _realpath(path), _realpath(root)
    return os.path.commonpath([real, real_root]) != real_root


def is_relative_name(name: str) -> bool:
    """Whether ``name`` is a relative posix path that stays below the folder it is joined to: not
    empty, not absolute, no drive, no backslash, no ``..``, ``.`` or empty part, no NUL."""
    return (
        bool(name)
        and "\\" not in name
        and "\x00" not in name
        and not PureWindowsPath(name).drive
        and all(part not in ("", ".", "..") for part in name.split("/"))
    )


def enforce_confinement(
    paths: Iterable[str | os.PathLike[str]], root: str | os.PathLike[str], *, confine: bool | None
) -> None:
    """Raise :class:`UnsafeCheckpointError` for the first path outside ``root`` when confinement is on.

    Example:
        >>> enforce_confinement(ckpt.weight_files, ckpt.root, confine=True)  # doctest: +SKIP
    """
    if not confine_enabled(confine):
        return
    for path in paths:
        if is_outside(path, root):
            raise UnsafeCheckpointError(
                f"resolves to {_realpath(path)}, outside the checkpoint root {Path(root)}",
                path=path,
                fix="copy the file into the checkpoint (ckptkit materialize), or pass confine=False "
                "if you trust where the link points",
            )
