"""Files of a repo that another cache already holds are linked into the cache a download goes to.

A model found whole in any cache is used in place (:func:`ckptkit.resolve.hub.resolve_hub`); one
found in part is completed in the first cache, and the files some other cache has at the same
commit are linked there first (a hard link of the blob, else a link to it: never a second copy),
so that ``snapshot_download`` fetches only the files no cache has. Offline, a model spread over
several caches is put together the same way (:func:`gather_offline`), or the files no cache has
are named.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from ckptkit.errors import CkptError, DestinationExistsError, IncompleteCheckpointError, UnsafeCheckpointError
from ckptkit.format.components import MODEL_INDEX_NAME
from ckptkit.format.confine import is_relative_name
from ckptkit.format.layout import discover_weight_sets
from ckptkit.format.naming import parse_index_filename
from ckptkit.io.atomic import staged_file
from ckptkit.resolve.hub_compat import cached_listing
from ckptkit.resolve.hub_spec import HubSpec

__all__ = ["Gathered", "gather_offline", "link_cached_files", "local_listing"]

logger = logging.getLogger("ckptkit")


def link_cached_files(spec: HubSpec, commit: str, files: list[str]) -> list[str]:
    """Link into ``spec.cache_dir`` each of ``files`` it lacks at ``commit`` and another cache holds
    (:func:`_held`: a blob of that cache, never a file a link leads elsewhere).

    Returns the files linked.
    """
    others = [c for c in spec.caches if os.path.abspath(c) != os.path.abspath(spec.cache_dir)]
    if not others:
        return []
    linked = []
    for name in files:
        if not is_relative_name(name) or _here(spec, commit, name):
            continue
        for cache in others:
            found = _held(spec, cache, commit, name)
            if found is not None and _link(found, spec.storage, commit, name):
                linked.append(name)
                break
    if linked:
        logger.info(
            "%s: %d files found in other caches, linked into %s", spec.label, len(linked), spec.cache_dir
        )
    return linked


def _held(spec: HubSpec, cache: Path, commit: str, name: str) -> Path | None:
    """The real path of ``name`` at ``commit`` in ``cache`` when that cache holds it: a file of its
    ``blobs/``, or the snapshot file itself in a cache written without links
    (``HF_HUB_DISABLE_SYMLINKS``). A name that is not a plain relative path, or a link that lands
    anywhere else, is not held (``None``)."""
    from huggingface_hub import try_to_load_from_cache

    if not is_relative_name(name):
        return None
    found = try_to_load_from_cache(spec.repo_id, name, cache, commit)
    if not isinstance(found, str):
        return None
    storage = spec.storage_in(cache)
    real = Path(os.path.realpath(found))
    if real.parent == Path(os.path.realpath(storage / "blobs")):
        return real
    snapshot = storage / "snapshots" / commit
    if not os.path.islink(found) and real == Path(os.path.realpath(snapshot)) / name:
        return real
    return None


def local_listing(snapshot: Path, directory: str) -> list[str]:
    """Files under the snapshot root, its top-level folders and ``directory``: enough to plan from."""
    out: list[str] = []
    folders = {directory} if directory else set()
    with os.scandir(snapshot) as entries:
        for entry in entries:
            if entry.is_dir():
                folders.add(entry.name)
            else:
                out.append(entry.name)
    for folder in folders:
        try:
            with os.scandir(snapshot / folder) as entries:
                out += [f"{folder}/{e.name}" for e in entries if not e.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            continue
    return out


@dataclass
class Gathered:
    """What the caches hold of one commit between them (see :func:`gather_offline`)."""

    listing: list[str] | None  # the repo's listing a cache recorded; None: only what is on disk
    missing: list[str]  # files the component needs that no cache holds
    none_here: bool = False  # no cache holds any of them


def gather_offline(spec: HubSpec, commit: str) -> Gathered | None:
    """Without the Hub: complete ``spec.cache_dir``'s snapshot of ``commit`` from the other caches.

    The files the component needs are planned from a listing of ``commit`` (the one a cache
    recorded, else every cache's snapshot folder together). When the caches hold all of them between
    them, those ``spec.cache_dir`` lacks are linked in as :func:`link_cached_files` links them (never
    a second copy) and its ``refs/`` names the commit; else nothing is written and ``missing`` names
    the files no cache holds. ``None`` when no other cache has a snapshot of ``commit`` (nothing to
    put together) or no plan can be made (the caller's own checks say why).
    """
    from huggingface_hub.utils import filter_repo_objects

    target = spec.storage / "snapshots" / commit
    holders = [spec.storage_in(c) / "snapshots" / commit for c in spec.caches]
    holders = [s for s in holders if s.is_dir()]
    if not any(s != target for s in holders):
        return None
    listing = next(
        (
            found
            for cache in spec.caches
            if (found := cached_listing(spec.repo_id, commit, cache, spec.storage_in(cache))) is not None
        ),
        None,
    )
    names = listing or sorted({n for s in holders for n in local_listing(s, spec.directory)})
    # A pipeline's components are read from its model_index.json, in whichever cache has it.
    planning = next((s for s in holders if (s / MODEL_INDEX_NAME).is_file()), target)
    try:
        plan = spec.plan(names, planning)
    except CkptError:
        return None
    needed = plan.files if listing is not None else plan.files + _numbering_gaps(plan.files, planning)
    if spec.allow_patterns is not None and listing is not None:
        needed = sorted(set(needed) | set(filter_repo_objects(listing, allow_patterns=spec.allow_patterns)))
    wanted = needed + [f for f in plan.optional if f in names]
    for name in wanted:
        if not is_relative_name(name):
            raise UnsafeCheckpointError(
                f"the listing of {commit} a cache recorded names {name!r}, not a file inside the repo",
                path=spec.storage,
                fix="delete the recorded listing (the repo's trees/ folder in the cache) and run again online",
            )
    held = {name: [c for c in spec.caches if _held(spec, c, commit, name) is not None] for name in needed}
    missing = [name for name in needed if not held[name]]
    if missing:
        return Gathered(listing, missing, none_here=len(missing) == len(needed))
    lacking = [n for n in wanted if not _here(spec, commit, n)]
    try:
        linked = link_cached_files(spec, commit, wanted)
        _record_ref(spec, commit)
    except OSError as exc:
        raise IncompleteCheckpointError(
            f"the model is spread over several caches, and the first, {spec.cache_dir}, where it is "
            f"put together, is not writable ({os.strerror(exc.errno or 0)}: {exc.filename})",
            path=spec.cache_dir,
            fix=f"pass cache_dir= a writable cache first, or only the cache that holds the files "
            f"({', '.join(str(c) for c in spec.caches[1:])}) when it holds all of them",
        ) from None
    for name in lacking:
        if name not in linked and name in held and not _here(spec, commit, name):
            pointer = spec.storage / "snapshots" / commit / name
            raise IncompleteCheckpointError(
                f"{name} is held by {held[name][0]} but could not be linked into {spec.cache_dir}",
                path=pointer,
                fix=f"remove {pointer} (it is not a file of the cache) and run again, or pass "
                f"cache_dir={str(held[name][0])!r}",
            )
    return Gathered(listing, [])


def _here(spec: HubSpec, commit: str, name: str) -> bool:
    """Whether ``spec.cache_dir`` holds ``name`` at ``commit`` (a dangling link does not count)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(spec.repo_id, name, spec.cache_dir, commit), str)


def _numbering_gaps(needed: list[str], snapshot: Path) -> list[str]:
    """The shards the numbering of ``needed`` implies that are not among them (``-00005-of-00005``
    when four of five are): without the repo's listing, what no cache holds is known by its name."""
    gaps = []
    for directory in sorted({posixpath.dirname(name) for name in needed}):
        shards = [
            snapshot / name
            for name in needed
            if posixpath.dirname(name) == directory and parse_index_filename(posixpath.basename(name)) is None
        ]
        for weight_set in discover_weight_sets(snapshot / directory, files=shards):
            gaps += [posixpath.join(directory, path.name) for path in weight_set.missing]
    return gaps


def _record_ref(spec: HubSpec, commit: str) -> None:
    """Name ``commit`` in ``refs/<revision>`` of ``spec.cache_dir`` when it names nothing yet, so that
    other clients (``from_pretrained(cache_dir=..., local_files_only=True)``) find the snapshot too."""
    revision = spec.revision or "main"
    if revision == commit or "/" in revision or revision in (".", ".."):
        return
    ref = spec.storage / "refs" / revision
    if os.path.lexists(ref):
        return
    ref.parent.mkdir(parents=True, exist_ok=True)
    try:
        with staged_file(ref, fsync=False) as staging:
            staging.path.write_text(commit)
    except DestinationExistsError:
        pass  # another process recorded it meanwhile


def _link(real: Path, storage: Path, commit: str, name: str) -> bool:
    """Make ``storage``'s snapshot of ``commit`` hold ``name`` as another cache does at ``real`` (the
    real path :func:`_held` found). A dangling pointer already there is replaced."""
    pointer = storage / "snapshots" / commit / name
    if os.path.lexists(pointer):
        if os.path.exists(pointer) or not os.path.islink(pointer):
            return False  # a file is there (or another process linked it meanwhile)
        pointer.unlink()  # a link to a blob gone: made again below
    pointer.parent.mkdir(parents=True, exist_ok=True)
    try:
        if real.parent.name == "blobs":  # the usual layout: the blob keeps its name (the file's hash)
            blob = storage / "blobs" / real.name
            blob.parent.mkdir(parents=True, exist_ok=True)
            if not os.path.lexists(blob):
                try:
                    _same_file(real, blob)
                except FileExistsError:
                    pass  # another process made the blob meanwhile: the same file (its name is its hash)
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
