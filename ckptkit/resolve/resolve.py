"""``resolve_ckpt_dir``: any way of naming a checkpoint -> one concrete, validated local directory."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ckptkit.errors import CheckpointNotFoundError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.components import check_subfolder
from ckptkit.format.confine import checkpoint_root, confine_enabled, enforce_confinement
from ckptkit.format.naming import parse_weight_filename
from ckptkit.format.safe_files import lexists
from ckptkit.resolve.hub import HubSpec, cache_dirs, is_offline, resolve_hub
from ckptkit.resolve.local import resolve_local
from ckptkit.resolve.repo_files import parse_cache_path, parse_repo_spec

__all__ = ["resolve_ckpt_dir", "resolve_local"]


def resolve_ckpt_dir(
    spec: str | os.PathLike[str] | CheckpointDir,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | list[str | os.PathLike[str]] | None = None,
    variant: str | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    allow_patterns: list[str] | str | None = None,
    variant_fallback: str = "warn",
    weights_name: str | None = None,
    endpoint: str | None = None,
    confine: bool | None = None,
    components: list[str] | str | None = None,
) -> CheckpointDir:
    """Turn any way of naming a checkpoint into one concrete, validated local directory.

    Forms of ``spec``: a local directory (one model, a whole pipeline, or a pipeline's component
    with ``subfolder=``); a local weights file; a hub cache repo folder ``.../models--org--name`` (``refs/<revision or main>`` is
    followed); a snapshot ``.../snapshots/<commit>`` (kept as is, never ``realpath``-ed); a folder made by
    ``snapshot_download(local_dir=...)``; a repo id ``"org/name"``; ``"org/name/path/in/repo.safetensors"``.

    A pipeline (a ``model_index.json`` naming component folders) is one checkpoint: without
    ``subfolder`` the result holds every component that has weights in ``components`` (the variant
    rules applied per component), and a weights file at the pipeline's root (SDXL's single file) is
    one more entry, never a replacement. Torch files at a pipeline's root (an original training
    ``.pth``) are left out.

    Hub forms look in every cache first: the ``cache_dir`` (or each of a list), then ``HF_HUB_CACHE``
    (else ``$HF_HOME/hub``), then each folder of ``CKPTKIT_CACHE_PATH`` (``os.pathsep``-separated);
    files found are used where they are, and no HTTP request is made when every file needed is in
    one of them (``CheckpointDir.cache_dir`` says which). Otherwise, unless ``local_files_only=True``
    or ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` is set, they download into the first cache
    through huggingface_hub only what is needed: per component its ``config.json``, the selected
    weight set (index and shards of the chosen variant, safetensors before ``.bin``) and its
    tokenizer files for a text encoder; for a whole pipeline also ``model_index.json`` and the
    folders without weights (scheduler, tokenizer). Weights files at a pipeline's root are not
    downloaded (name one as ``"org/name/file.safetensors"`` to get it). Files another cache holds at
    the same commit are linked into the first, never copied again; offline (or with the Hub out of
    reach) a model spread over several caches is put together that way, and a file no cache holds
    is named alone in the ``IncompleteCheckpointError``, with every place looked.

    Args:
        spec: one of the forms above, or a :class:`CheckpointDir` (returned as is).
        subfolder: a component of a pipeline (``"vae"``, ``"transformer"``). A component works
            without the pipeline's ``model_index.json`` (after ``hf download repo --include "vae/*"``).
        revision: branch, tag or commit (hub forms; default ``main``).
        cache_dir: the hub cache to download into and look in first, or a list of caches to look in
            (downloads go to the first); see above for the caches always searched after it.
        variant: the variant wanted (``"fp16"``); see the variant rules.
        local_files_only: never download (hub forms); ``None`` follows ``HF_HUB_OFFLINE``.
        token: hub token (hub forms).
        allow_patterns: download these files instead of the computed minimum (hub forms).
        variant_fallback: ``"warn"``, ``"allow"`` or ``"error"``.
        weights_name: only consider weights of this name (``"model"``, ``"diffusion_pytorch_model"``).
        endpoint: the Hub to download from (default ``HF_ENDPOINT``).
        confine: refuse selected weight files or index whose real path lies outside the checkpoint
            root (``models--org--name`` for hub snapshots); ``None`` follows ``CKPTKIT_CONFINE``.
        components: for a pipeline, resolve (and download) only these components
            (``["transformer", "vae"]``); default: all of them.

    Returns:
        The :class:`CheckpointDir`: its selected weight set is complete (every indexed shard present,
        no dangling link). For a pipeline, ``components`` holds one per component and
        ``weight_files`` lists all of theirs.

    Raises:
        CheckpointNotFoundError: nothing found; the message lists every place looked and, offline, the
            command that would fetch it (:class:`HubUnreachableError` when the Hub could not be asked).
        VariantNotFoundError: the variant rules refuse.
        IncompleteCheckpointError: the selected set misses files (or a pipeline misses components);
            says which and how to resume.
        UnsafeCheckpointError: ``confine`` and a selected file links outside the checkpoint root.
        ValueError: both ``subfolder`` and ``components``.

    Example:
        >>> ckpt = resolve_ckpt_dir("PixArt-alpha/PixArt-XL-2-1024-MS", subfolder="vae")  # doctest: +SKIP
        >>> ckpt.weight_files  # doctest: +SKIP
        [PosixPath('.../models--PixArt-alpha--PixArt-XL-2-1024-MS/snapshots/<commit>/vae/diffusion_pytorch_model.safetensors')]
    """
    if components is not None and subfolder is not None:
        raise ValueError("pass subfolder= (one component) or components= (several), not both")
    if isinstance(spec, CheckpointDir) and subfolder is None:
        return _confined(spec, confine)
    return _confined(
        _resolve(
            spec,
            subfolder=subfolder,
            revision=revision,
            cache_dir=cache_dir,
            variant=variant,
            local_files_only=local_files_only,
            token=token,
            allow_patterns=allow_patterns,
            variant_fallback=variant_fallback,
            weights_name=weights_name,
            endpoint=endpoint,
            components=components,
        ),
        confine,
    )


def _confined(ckpt: CheckpointDir, confine: bool | None) -> CheckpointDir:
    """``ckpt`` after refusing (with ``confine``) selected files whose real path leaves its root."""
    if confine_enabled(confine):
        for part in [ckpt, *ckpt.components.values()]:
            root = part.root or checkpoint_root(part.path)
            # The folder too: a component that is a link leaving the pipeline is outside.
            files = [part.path, *part.weight_files, *([part.index_file] if part.index_file else [])]
            enforce_confinement(files, root, confine=True)
    return ckpt


def _resolve(
    spec: str | os.PathLike[str] | CheckpointDir,
    *,
    subfolder: str | None,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | list[str | os.PathLike[str]] | None,
    variant: str | None,
    local_files_only: bool | None,
    token: str | bool | None,
    allow_patterns: list[str] | str | None,
    variant_fallback: str,
    weights_name: str | None,
    endpoint: str | None,
    components: list[str] | str | None,
) -> CheckpointDir:
    raw = os.fspath(spec)
    path = Path(os.path.expanduser(raw))
    if subfolder:
        check_subfolder(subfolder, path)
    hub_options: dict[str, Any] = {
        "revision": revision,
        "variant": variant,
        "variant_fallback": variant_fallback,
        "weights_name": weights_name,
        "allow_patterns": [allow_patterns] if isinstance(allow_patterns, str) else allow_patterns,
        "token": token,
        "endpoint": endpoint,
        "local_files_only": local_files_only,
        "components": [components] if isinstance(components, str) else components,
    }
    in_cache = parse_cache_path(path)
    if in_cache is not None:
        storage, repo_id, commit, in_repo = in_cache
        if commit is not None:
            hub_options["revision"] = commit
        return _resolve_hub(
            repo_id,
            _join(in_repo, subfolder),
            cache_dir=storage.parent,
            from_repo_folder=commit is None,
            search_caches=False,
            **hub_options,
        )
    if lexists(path):
        return resolve_local(
            path,
            subfolder=subfolder,
            variant=variant,
            variant_fallback=variant_fallback,
            weights_name=weights_name,
            components=components,
        )
    repo = parse_repo_spec(raw) if isinstance(raw, str) else None
    if repo is not None:
        repo_id, in_repo = repo
        looked = [f"{path.absolute()} (as a local path)"]
        return _resolve_hub(
            repo_id, _join(in_repo, subfolder), cache_dir=cache_dir, looked=looked, **hub_options
        )
    raise CheckpointNotFoundError(
        "no such file or directory, and not a hub repo id (org/name)",
        path=path.absolute(),
        fix="check the path, or give a repo id such as 'org/name' (with subfolder=)",
    )


def _join(*parts: str | None) -> str:
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


def _resolve_hub(
    repo_id: str,
    in_repo: str,
    *,
    cache_dir: str | os.PathLike[str] | list[str | os.PathLike[str]] | None,
    local_files_only: bool | None,
    from_repo_folder: bool = False,
    search_caches: bool = True,
    **options: Any,
) -> CheckpointDir:
    is_file = bool(in_repo) and parse_weight_filename(in_repo.rsplit("/", 1)[-1]) is not None
    spec = HubSpec(
        repo_id=repo_id,
        directory="" if is_file else in_repo,
        filename=in_repo if is_file else None,
        # A path inside a cache names that cache alone; otherwise every cache the user has is searched.
        caches=cache_dirs(cache_dir, search=search_caches),
        offline=bool(local_files_only) or is_offline(),
        pick_only_snapshot=from_repo_folder,
        **options,
    )
    return resolve_hub(spec)
