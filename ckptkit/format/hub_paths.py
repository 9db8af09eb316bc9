"""Where a path lies in the hub cache, from its spelling alone (no reads but a link target).

Kept apart from :mod:`ckptkit.format.hub_files` so that :mod:`ckptkit.format.safe_files` can name
the right fix for a dangling link without importing the hub bookkeeping readers (which open files
through it).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_FOLDER_PREFIXES", "dangling_link_fix", "hub_repo_root"]

#: Folder name prefixes of repos in the hub cache (``models--org--name``).
REPO_FOLDER_PREFIXES = ("models--", "datasets--", "spaces--")


def hub_repo_root(path: str | os.PathLike[str]) -> Path | None:
    """The ``models--org--name`` folder when ``path`` lies in one of its snapshots, else ``None``.

    The path is looked at as written (links are not followed): a snapshot path resolved to its
    blob has lost the repo's names.

    Example:
        >>> hub_repo_root("/c/hub/models--org--name/snapshots/abc123/vae")
        PosixPath('/c/hub/models--org--name')
    """
    parts = Path(os.path.abspath(os.fspath(path))).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith(REPO_FOLDER_PREFIXES):
            return Path(*parts[:i])
    return None


def dangling_link_fix(path: str | os.PathLike[str]) -> str:
    """What to do about a link that points nowhere, told apart by where it lies.

    A hub snapshot's files are relative links into ``../../blobs/``. Inside a ``models--*`` folder a
    dangling one means an interrupted download or a cleaned cache; outside one, the snapshot was
    copied out of its cache (``cp -a``, ``cp -r``) and the links were left pointing at blobs that
    are not there.

    Example:
        >>> dangling_link_fix("/tmp/copy/model.safetensors")  # doctest: +SKIP
        'this is a hub snapshot copied out of its cache ...'
    """
    target = os.readlink(path) if os.path.islink(path) else ""
    if "blobs/" in target.replace(os.sep, "/") and hub_repo_root(path) is None:
        return (
            f"this is a hub snapshot copied out of its cache: the link leads to {target[:200]!r}, a blob that "
            "stayed behind in the models--org--name/blobs/ folder; copy the snapshot with its files, "
            "not its links (`ckptkit materialize SNAPSHOT DST`, or `cp -rL`), or point at the snapshot "
            "inside the cache"
        )
    return "the download was interrupted or the cache was cleaned; download the file again"
