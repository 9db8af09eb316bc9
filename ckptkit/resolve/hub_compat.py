"""The huggingface_hub pieces that differ between the supported versions (>= 0.30).

Newer pieces are used where the installed version has them (found by attribute, never by version
string), with a fallback that works on every supported version:

- ``HfApi.resolve_revision`` -> the cache's ``refs/<revision>`` file offline (read by
  :mod:`ckptkit.resolve.hub` itself), ``model_info`` online;
- ``get_cached_repo_tree`` -> the ``trees/<commit>.json`` a newer client may have left, else
  ``None`` (the caller lists the snapshot folder);
- the HTTP client's transport errors -> those of whichever client (``requests``, ``httpx``,
  ``httpx2``) the installed huggingface_hub has imported.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ckptkit.format.hub_files import read_tree_listing

__all__ = ["cached_listing", "cached_revision", "resolve_online", "unreachable_errors"]


def cached_revision(repo_id: str, revision: str | None, cache_dir: Path) -> str | None:
    """The commit huggingface_hub's ``resolve_revision`` finds in the cache with no request.

    ``None`` when it does not know the revision, or when the installed version has no such method
    (< 1.26: the ``refs/`` file the caller reads is all there is).
    """
    from huggingface_hub import HfApi, errors

    unresolved = getattr(errors, "RevisionResolutionError", None)
    if not hasattr(HfApi, "resolve_revision") or unresolved is None:
        return None
    try:
        resolved = HfApi().resolve_revision(
            repo_id, revision=revision, cache_dir=cache_dir, local_files_only=True
        )
    except unresolved:
        return None
    return str(resolved.resolved)


def cached_listing(repo_id: str, commit: str, cache_dir: Path, storage: Path) -> list[str] | None:
    """The repo's full listing at ``commit`` as the cache recorded it, or ``None`` if it did not."""
    import huggingface_hub
    from huggingface_hub import errors

    get_tree = getattr(huggingface_hub, "get_cached_repo_tree", None)
    not_found = getattr(errors, "CachedRepoTreeNotFoundError", None)
    if get_tree is not None and not_found is not None:
        try:
            return [f.path for f in get_tree(repo_id, revision=commit, cache_dir=cache_dir)]
        except not_found:
            return None
    # An older client: a newer one sharing this cache may still have written the listing.
    files = read_tree_listing(storage, commit)
    return sorted(files) if files is not None else None


def resolve_online(
    api: Any, repo_id: str, revision: str | None, cache_dir: Path
) -> tuple[Any, str, list[str]]:
    """Ask the Hub which commit ``revision`` is and what it holds: ``(target, commit, listing)``.

    ``target`` is what to pass to ``snapshot_download`` as ``revision=``: the resolution itself
    where the client has ``resolve_revision`` (the branch cannot move between listing and
    downloading), else the branch, so that ``snapshot_download`` records ``refs/<branch>``.
    """
    if hasattr(api, "resolve_revision"):
        target = api.resolve_revision(repo_id, revision=revision, cache_dir=cache_dir)
        commit = str(target.resolved)
        return target, commit, api.list_repo_files(repo_id, revision=commit)
    # huggingface_hub < 1.26: model_info gives the commit and the listing in one request.
    info = api.model_info(repo_id, revision=revision)
    return revision, str(info.sha), [s.rfilename for s in info.siblings or []]


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection and timeout errors of the HTTP client the installed huggingface_hub uses.

    huggingface_hub < 1.0 talks through ``requests``, 1.x through ``httpx``, later ones through
    ``httpx2``; only a client already imported (by huggingface_hub itself) is looked at.
    """
    import huggingface_hub.file_download  # noqa: F401 - imports the client huggingface_hub uses

    found: list[type[BaseException]] = []
    for module, names in (
        ("httpx2", ("TransportError",)),
        ("httpx", ("TransportError",)),
        ("requests", ("ConnectionError", "Timeout")),
    ):
        client = sys.modules.get(module)
        for name in names:
            cls = getattr(client, name, None) if client is not None else None
            if isinstance(cls, type) and issubclass(cls, BaseException):
                found.append(cls)
    return tuple(found)


def unreachable_errors() -> tuple[type[BaseException], ...]:
    """Every error that means "the Hub could not be asked" under the installed huggingface_hub."""
    from huggingface_hub import errors

    found: tuple[type[BaseException], ...] = (
        errors.LocalEntryNotFoundError,
        errors.OfflineModeIsEnabled,
        errors.HfHubHTTPError,
        *_transport_errors(),
    )
    unresolved = getattr(errors, "RevisionResolutionError", None)
    return (*found, unresolved) if unresolved is not None else found
