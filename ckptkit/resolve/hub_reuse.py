"""Files of a repo that another cache already holds are linked into the cache a download goes to.

A model found whole in any cache is used in place (:func:`ckptkit.resolve.hub.resolve_hub`); one
found in part is completed in the first cache, and the files some other cache has at the same
commit are linked there first (a hard link of the blob, else a link to it: never a second copy),
so that ``snapshot_download`` fetches only the files no cache has.
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

from ckptkit.resolve.hub_spec import HubSpec

__all__ = ["link_cached_files"]

logger = logging.getLogger("ckptkit")


def link_cached_files(spec: HubSpec, commit: str, files: list[str]) -> list[str]:
    """Link into ``spec.cache_dir`` each of ``files`` it lacks at ``commit`` and another cache has.

    Returns the files linked.
    """
    from huggingface_hub import try_to_load_from_cache

    others = [c for c in spec.caches if os.path.abspath(c) != os.path.abspath(spec.cache_dir)]
    if not others:
        return []
    linked = []
    for name in files:
        if isinstance(try_to_load_from_cache(spec.repo_id, name, spec.cache_dir, commit), str):
            continue
        for cache in others:
            found = try_to_load_from_cache(spec.repo_id, name, cache, commit)
            if isinstance(found, str) and _link(Path(found), spec.storage, commit, name):
                linked.append(name)
                break
    if linked:
        logger.info(
            "%s: %d files found in other caches, linked into %s", spec.label, len(linked), spec.cache_dir
        )
    return linked


def _link(found: Path, storage: Path, commit: str, name: str) -> bool:
    """Make ``storage``'s snapshot of ``commit`` hold ``name`` as the cache at ``found`` does."""
    real = Path(os.path.realpath(found))
    pointer = storage / "snapshots" / commit / name
    if os.path.lexists(pointer):
        return False
    pointer.parent.mkdir(parents=True, exist_ok=True)
    try:
        if real.parent.name == "blobs":  # the usual layout: the blob keeps its name (the file's hash)
            blob = storage / "blobs" / real.name
            blob.parent.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(blob):
                _same_file(real, blob)
            os.symlink(os.path.relpath(blob, pointer.parent), pointer)
        else:  # a cache written without links (HF_HUB_DISABLE_SYMLINKS): the file itself
            _same_file(real, pointer)
    except FileExistsError:
        return False  # another process linked or downloaded it meanwhile
    return True


def _same_file(src: Path, dst: Path) -> None:
    """``dst`` becomes ``src``: a hard link, else (another file system) a link to it."""
    try:
        os.link(src, dst)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
            raise
        os.symlink(src, dst)
