"""Hub repos and the huggingface_hub cache: find a component offline first, else download the minimum.

The cache is read and written by huggingface_hub's own functions (``HfApi.resolve_revision``,
``get_cached_repo_tree``, ``try_to_load_from_cache``, ``snapshot_download``); which files a component
needs is decided by :mod:`ckptkit.resolve.repo_files` from the repo's listing. huggingface_hub >= 0.30
is supported: where the installed version lacks one of those functions, :mod:`ckptkit.resolve.hub_compat`
gives the fallback.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Any

from ckptkit.errors import (
    CheckpointNotFoundError,
    CkptError,
    HubUnreachableError,
    IncompleteCheckpointError,
)
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.components import MODEL_INDEX_NAME
from ckptkit.format.hub_files import read_ref
from ckptkit.format.naming import parse_weight_filename
from ckptkit.resolve.hub_compat import cached_listing, cached_revision, resolve_online, unreachable_errors
from ckptkit.resolve.hub_misses import CacheMiss, fetch_command, hf_cli, offline_miss, resume_fix
from ckptkit.resolve.hub_reuse import gather_offline, link_cached_files, local_listing
from ckptkit.resolve.hub_spec import (
    CACHE_PATH_ENV,
    HubSpec,
    cache_dirs,
    default_cache_dir,
    is_offline,
)
from ckptkit.resolve.local import resolve_local
from ckptkit.resolve.repo_files import DownloadPlan

__all__ = ["CACHE_PATH_ENV", "HubSpec", "cache_dirs", "default_cache_dir", "is_offline", "resolve_hub"]

logger = logging.getLogger("ckptkit")

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


# -- the cache ----------------------------------------------------------------------------------


def _cached_commit(spec: HubSpec) -> str | None:
    if spec.revision is not None and _COMMIT.match(spec.revision):
        return spec.revision
    # Read refs/<revision> ourselves: capped, a commit hash or a typed error (never a path that
    # would lead outside the cache, never its content in a message).
    if spec.storage.is_dir():
        commit = read_ref(spec.storage, spec.revision or "main")
        if commit is not None:
            return commit
    commit = cached_revision(spec.repo_id, spec.revision, spec.cache_dir)
    if commit is not None:
        return commit
    snapshots = spec.storage / "snapshots"
    if spec.pick_only_snapshot and spec.revision is None and snapshots.is_dir():
        commits = sorted(p.name for p in snapshots.iterdir() if p.is_dir())
        if len(commits) == 1:
            logger.info("%s has no refs/main; using its only snapshot %s", spec.storage, commits[0])
            return commits[0]
        if len(commits) > 1:
            raise CheckpointNotFoundError(
                "no refs/main and several snapshots: " + ", ".join(commits),
                path=spec.storage,
                fix="pass revision= one of those commits",
            )
    return None


def _from_cache(
    spec: HubSpec, commit: str | None = None, hub_listing: list[str] | None = None
) -> CheckpointDir | CacheMiss:
    """Resolve from the cache alone (no HTTP); a :class:`CacheMiss` says what is lacking.

    ``hub_listing`` is the Hub's listing of ``commit`` just fetched, for clients that do not record
    it in the cache.
    """
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import filter_repo_objects

    commit = commit or _cached_commit(spec)
    spec.looked.append(str(spec.storage / "refs" / (spec.revision or "main")))
    if commit is None:
        return CacheMiss(None)
    snapshot = spec.storage / "snapshots" / commit
    spec.looked.append(str(snapshot / (spec.filename or spec.directory)))
    if not snapshot.is_dir():
        return CacheMiss(commit)
    cached = (
        cached_listing(spec.repo_id, commit, spec.cache_dir, spec.storage)
        if hub_listing is None
        else hub_listing
    )
    listing, listed = (
        (cached, True) if cached is not None else (local_listing(snapshot, spec.directory), False)
    )
    try:
        plan = spec.plan(listing, snapshot)
    except CkptError as exc:
        pinned = spec.revision is not None and _COMMIT.match(spec.revision)
        if listed and (pinned or spec.offline):
            raise  # the listing of that very commit says so
        # A branch may have moved on since it was cached, and a cache without a listing shows only
        # what was downloaded: let the Hub's listing decide when it can be asked.
        return CacheMiss(commit, error=exc, listed=listed)
    needed = plan.files
    if spec.allow_patterns is not None and listed:
        needed = sorted(set(needed) | set(filter_repo_objects(listing, allow_patterns=spec.allow_patterns)))
    missing = [
        f
        for f in needed
        if not isinstance(try_to_load_from_cache(spec.repo_id, f, spec.cache_dir, commit), str)
    ]
    if missing:
        # Not one file of it is here: it was never downloaded (not an interrupted download). A
        # pipeline whose model_index.json is missing but some component is here is incomplete.
        none_here = set(missing) == set(needed) and not (plan.components == [] and any(snapshot.iterdir()))
        return CacheMiss(commit, missing, listed=listed, none_here=none_here)
    chosen = plan.selection.weight_set if plan.selection else None
    if (
        not listed
        and not spec.offline
        and (
            (chosen is not None and chosen.variant != spec.variant)
            or (spec.variant is not None and not _variant_everywhere(plan, spec.variant))
        )
    ):
        # Only the cache was listed: the variant asked for may still exist on the Hub.
        return CacheMiss(commit, [], listed=False)
    if not listed:
        try:
            return _resolve_snapshot(spec, snapshot, commit)
        except IncompleteCheckpointError as exc:
            # Only what is on disk was listed (a shard gone, a link dangling): the Hub's listing says
            # what to fetch again, or offline another cache may hold it (else this error is raised).
            return CacheMiss(commit, error=exc, listed=False)
    return _resolve_snapshot(spec, snapshot, commit)


def _variant_everywhere(plan: DownloadPlan, variant: str) -> bool:
    """Whether each pipeline component planned has weights of ``variant`` among its files."""
    found = {
        posixpath.dirname(f)
        for f in plan.files
        if (parsed := parse_weight_filename(posixpath.basename(f))) and parsed.variant == variant
    }
    return all(name in found for name in plan.components or ())


def _resolve_snapshot(spec: HubSpec, snapshot: Path, commit: str) -> CheckpointDir:
    origin: dict[str, Any] = {"repo_id": spec.repo_id, "revision": commit, "cache_dir": spec.cache_dir}
    try:
        if spec.filename is not None:
            ckpt = resolve_local(snapshot / spec.filename, root=spec.storage, **origin)
            ckpt.subfolder = posixpath.dirname(spec.filename) or None
            return ckpt
        return resolve_local(
            snapshot,
            subfolder=spec.directory or None,
            variant=spec.variant,
            variant_fallback=spec.variant_fallback,
            weights_name=spec.weights_name,
            components=spec.components,
            root=spec.storage,
            **origin,
        )
    except IncompleteCheckpointError as exc:
        raise IncompleteCheckpointError(
            exc.detail, path=exc.path, fix=resume_fix(spec, commit, None)
        ) from None


# -- download -----------------------------------------------------------------------------------


def _download(spec: HubSpec) -> tuple[str, list[str] | None]:
    """List the repo, plan the component's files, and fetch them with ``snapshot_download``.

    Returns the commit downloaded and the Hub's listing of it (``None`` if the branch moved on
    between listing and downloading).
    """
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.utils import filter_repo_objects

    api = HfApi(endpoint=spec.endpoint, token=spec.token)
    where = spec.endpoint or api.endpoint
    spec.looked.append(f"{where}/{spec.repo_id} (revision {spec.revision or 'main'})")
    try:
        target, commit, listing = resolve_online(api, spec.repo_id, spec.revision, spec.cache_dir)
        snapshot = spec.storage / "snapshots" / commit
        plan = spec.plan(listing, snapshot)
        if plan.components == []:  # a pipeline: which components it has is in its model_index.json
            _link_what_others_hold(spec, commit, [MODEL_INDEX_NAME])
            hf_hub_download(
                spec.repo_id,
                MODEL_INDEX_NAME,
                revision=commit,
                cache_dir=spec.cache_dir,
                token=spec.token,
                endpoint=spec.endpoint,
            )
            plan = spec.plan(listing, snapshot)
        wanted = plan.files + [f for f in plan.optional if f in listing]
        patterns = spec.allow_patterns if spec.allow_patterns is not None else wanted
        if spec.allow_patterns is not None:  # what the patterns fetch, as the cache check counts it
            wanted = sorted(set(wanted) | set(filter_repo_objects(listing, allow_patterns=patterns)))
        _link_what_others_hold(spec, commit, wanted)  # what another cache holds is not fetched again
        logger.info("downloading %d files of %s: %s", len(plan.files), spec.label, ", ".join(plan.files))
        folder = snapshot_download(
            spec.repo_id,
            revision=target,
            cache_dir=spec.cache_dir,
            allow_patterns=patterns,
            token=spec.token,
            endpoint=spec.endpoint,
        )
    except RevisionNotFoundError:
        raise CheckpointNotFoundError(
            f"revision {spec.revision!r} does not exist in {spec.repo_id}",
            path=f"{where}/{spec.repo_id}",
            fix="pass an existing branch, tag or commit as revision=",
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointNotFoundError(
            f"repo {spec.repo_id} was not found on {where} (or it is private/gated and no valid token was "
            f"given); looked in: {'; '.join(spec.looked)}",
            path=spec.label,
            fix=f"check the repo id, log in with `{hf_cli('login')}` or pass token=",
        ) from None
    except unreachable_errors() as exc:
        raise HubUnreachableError(
            f"not in the hub cache and the Hub could not be reached ({type(exc).__name__}: {exc}); "
            f"looked in: {'; '.join(spec.looked)}",
            path=spec.label,
            fix=f"check the network or HF_ENDPOINT, or fetch it with: {fetch_command(spec, None)}",
        ) from None
    # The snapshot folder is named by the commit actually downloaded.
    downloaded = Path(folder).name
    return downloaded, listing if downloaded == commit else None


def _resolve_unlisted_snapshot(spec: HubSpec, miss: CacheMiss) -> None:
    """Without the Hub, a cached snapshot that has no listing is judged by what is on disk.

    Its own error (a dangling link, an unfinished blob, a missing shard) is the one worth showing,
    not "not in the cache"; raises it, or returns when the snapshot cannot say more.
    """
    if miss.commit is None or miss.listed:
        return
    snapshot = spec.storage / "snapshots" / miss.commit
    if snapshot.is_dir():
        _resolve_snapshot(spec, snapshot, miss.commit)


def _link_what_others_hold(spec: HubSpec, commit: str, files: list[str]) -> None:
    """Online: link what other caches hold; a file that cannot be linked is downloaded instead."""
    try:
        link_cached_files(spec, commit, files)
    except OSError as exc:  # the download writes to the same cache, and says so if it cannot
        logger.warning(
            "%s: files other caches hold could not be linked into %s (%s); downloading them",
            spec.label,
            spec.cache_dir,
            exc,
        )


def _gather_offline(spec: HubSpec, commit: str) -> CheckpointDir | CacheMiss | None:
    """Offline, a model spread over several caches at ``commit``: put together in the first cache
    (files linked, never copied), else the miss naming only the files no cache holds.

    ``None`` when there is nothing to put together (the caller's miss stands).
    """
    speaking, spec.cache_dir = spec.cache_dir, spec.caches[0]
    gathered = gather_offline(spec, commit)
    if gathered is None:
        spec.cache_dir = speaking  # nothing put together: the cache holding part speaks for it
        return None
    if gathered.missing:
        return CacheMiss(commit, gathered.missing, listed=True, none_here=gathered.none_here)
    found = _from_cache(spec, commit, gathered.listing)
    if isinstance(found, CacheMiss):
        found.listed = True  # judged with every cache: the error stands, with every place looked
    return found


def _without_the_hub(spec: HubSpec, misses: list[tuple[Path, CacheMiss]]) -> CheckpointDir | CacheMiss:
    """What the caches give with no request: the model put together from several of them, else the
    miss to report (a snapshot judged by what is on disk raises its own error first)."""
    # The cache holding part of it speaks for it (its error, its missing files); else the first.
    spec.cache_dir, found = next(((c, m) for c, m in misses if m.commit is not None), misses[0])
    if found.commit is not None:
        gathered = _gather_offline(spec, found.commit)
        if isinstance(gathered, CheckpointDir):
            return gathered
        found = gathered or found
    _resolve_unlisted_snapshot(spec, found)
    return found


def resolve_hub(spec: HubSpec) -> CheckpointDir:
    """Resolve a hub component: from the cache with no request when it is all there, else download it.

    Every cache of ``spec.caches`` is looked in, in order; files are used where they are found.

    Raises:
        CheckpointNotFoundError: not cached and offline, or no such repo/revision/folder/file
            (:class:`HubUnreachableError`: the Hub could not be asked).
        IncompleteCheckpointError: cached in part while offline, or still incomplete after downloading.
        VariantNotFoundError: the variant rules refuse.
    """
    misses: list[tuple[Path, CacheMiss]] = []
    for cache in spec.caches:
        spec.cache_dir = cache
        found = _from_cache(spec)
        if isinstance(found, CheckpointDir):
            return found
        misses.append((cache, found))
    if spec.offline:
        found = _without_the_hub(spec, misses)
        if isinstance(found, CheckpointDir):
            return found
        raise offline_miss(spec, found, env_offline=is_offline())
    spec.cache_dir = spec.caches[0]  # downloads go to the first cache
    try:
        commit, listing = _download(spec)
    except HubUnreachableError:
        found = _without_the_hub(spec, misses)
        if isinstance(found, CheckpointDir):
            logger.info("%s: the Hub could not be reached; put together from the caches", spec.label)
            return found
        raise
    again = _from_cache(spec, commit, listing)
    if isinstance(again, CheckpointDir):
        return again
    if again.error is not None:
        raise again.error
    raise IncompleteCheckpointError(
        "still missing after download: " + ", ".join(again.missing),
        path=spec.storage / "snapshots" / commit,
        fix=resume_fix(spec, commit, again.missing),
    )
