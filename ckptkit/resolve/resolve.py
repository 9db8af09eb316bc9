"""``resolve_ckpt_dir``: any way of naming a checkpoint -> one concrete, validated local directory."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ckptkit.errors import CheckpointNotFoundError, CkptWarning, IncompleteCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.components import MODEL_INDEX_NAME, choose_components, read_model_index
from ckptkit.format.confine import checkpoint_root, confine_enabled, enforce_confinement
from ckptkit.format.layout import Selection, WeightSet, discover_weight_sets, select_weight_set
from ckptkit.format.naming import parse_weight_filename
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
    downloaded (name one as ``"org/name/file.safetensors"`` to get it).

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
            files = [*part.weight_files, *([part.index_file] if part.index_file else [])]
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
    if path.exists() or path.is_symlink():
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
    from ckptkit.resolve.hub import HubSpec, cache_dirs, is_offline, resolve_hub

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


def resolve_local(
    path: str | os.PathLike[str],
    *,
    subfolder: str | None = None,
    variant: str | None = None,
    variant_fallback: str = "warn",
    weights_name: str | None = None,
    components: list[str] | str | None = None,
    root: Path | None = None,
    **origin: object,
) -> CheckpointDir:
    """Resolve a local directory or weights file (see :func:`resolve_ckpt_dir`).

    Args:
        components: for a pipeline, the components to resolve (default: every one holding weights).
        origin: ``repo_id``/``revision``/``cache_dir`` to record on the result when the path came
            from a hub.
    """
    path = Path(path)
    if subfolder:
        path = path / subfolder
        if not path.exists():
            raise CheckpointNotFoundError(
                f"subfolder {subfolder!r} does not exist",
                path=path,
                fix=_components_hint(path.parent) or "check the subfolder name",
            )
    if path.is_file() or (path.is_symlink() and not path.is_dir()):
        return _resolve_file(path, variant=variant, root=root, subfolder=subfolder, **origin)
    if (components is not None or weights_name is None) and (path / MODEL_INDEX_NAME).is_file():
        pipeline = _resolve_pipeline(
            path,
            components=components,
            variant=variant,
            variant_fallback=variant_fallback,
            root=root or path,
            **origin,
        )
        if pipeline is not None:
            return pipeline
    elif components is not None:
        raise CheckpointNotFoundError(
            f"components={components!r} was given but this is not a pipeline (no {MODEL_INDEX_NAME})",
            path=path,
            fix="leave out components=, or point at the pipeline's root directory",
        )
    sets = discover_weight_sets(path)
    if not sets:
        hint = _components_hint(path)
        raise CheckpointNotFoundError(
            "no weights files (*.safetensors, *.bin, *.pt, *.pth, *.ckpt) in this directory",
            path=path,
            fix=hint or "point at the directory that holds the weights, or pass subfolder=",
        )
    selection = select_weight_set(
        sets, variant=variant, variant_fallback=variant_fallback, name=weights_name, where=path
    )
    selection.weight_set.raise_if_unusable()
    _raise_if_dangling(selection.weight_set)
    if selection.warning:
        warnings.warn(selection.warning, CkptWarning, stacklevel=3)
    return CheckpointDir.from_selection(path, selection, subfolder=subfolder, root=root or path, **origin)


def _resolve_file(path: Path, *, variant: str | None, root: Path | None, **origin: object) -> CheckpointDir:
    if not path.exists():
        # A dangling link: selection would find nothing, so say what is wrong.
        raise_missing = WeightSet(path.parent, path.stem, "safetensors", None, [], missing=[path])
        raise_missing.raise_if_unusable()
    parsed = parse_weight_filename(path.name)
    if parsed is None:
        raise CheckpointNotFoundError(
            "is not a weights file (expected .safetensors, .bin, .pt, .pth or .ckpt)", path=path
        )
    # A shard stands for its whole set: loading one shard alone is never what is meant.
    if parsed.shard is not None:
        for weight_set in discover_weight_sets(path.parent):
            if path in weight_set.files:
                weight_set.raise_if_unusable()
                return CheckpointDir.from_selection(
                    path.parent, Selection(weight_set, variant), root=root or path.parent, **origin
                )
    single = WeightSet(path.parent, parsed.stem, parsed.format, parsed.variant, [path])
    return CheckpointDir.from_selection(
        path.parent, Selection(single, variant), root=root or path.parent, **origin
    )


def _resolve_pipeline(
    path: Path,
    *,
    components: list[str] | str | None,
    variant: str | None,
    variant_fallback: str,
    root: Path,
    **origin: Any,
) -> CheckpointDir | None:
    """A whole pipeline: each component holding weights, then any weights file at its root.

    ``None`` when no component folder holds weights but the root does (a single-file checkpoint that
    also carries a ``model_index.json``): the caller resolves the root as one model.
    """
    index = read_model_index(path) or []
    named = [c.name for c in index]
    chosen = choose_components(named, components, where=path)
    found: dict[str, CheckpointDir] = {}
    absent = []
    for component in index:
        if component.name not in chosen:
            continue
        folder = path / component.name
        if not folder.is_dir():
            if component.class_name is not None or components is not None:
                absent.append(component.name)
            continue
        if not discover_weight_sets(folder):
            if components is not None and component.name in chosen:
                raise CheckpointNotFoundError(
                    f"component {component.name!r} holds no weights files",
                    path=folder,
                    fix="ask only for components that hold weights (or copy its folder as is)",
                )
            continue
        found[component.name] = resolve_local(
            path,
            subfolder=component.name,
            variant=variant,
            variant_fallback=variant_fallback,
            root=root,
            **origin,
        )
    if components is None:
        root_sets = [s for s in discover_weight_sets(path) if s.format == "safetensors"]
        if not found:
            return None if discover_weight_sets(path) else _no_components(path, absent)
        for family in dict.fromkeys(s.family for s in root_sets):
            # One more weight set beside the components (SDXL's sd_xl_base_1.0.safetensors).
            selection = select_weight_set(
                [s for s in root_sets if s.family == family],
                variant=variant,
                variant_fallback="allow",
                where=path,
            )
            selection.weight_set.raise_if_unusable()
            _raise_if_dangling(selection.weight_set)
            found[selection.weight_set.name] = CheckpointDir.from_selection(
                path, selection, root=root, **origin
            )
    if absent:
        raise IncompleteCheckpointError(
            f"{MODEL_INDEX_NAME} names components that are not here: " + ", ".join(absent),
            path=path,
            fix="download them too (or pass components= the ones you need)",
        )
    if not found:
        return _no_components(path, absent)
    return CheckpointDir.pipeline(path, found, root=root, **origin)


def _no_components(path: Path, absent: list[str]) -> CheckpointDir:
    raise CheckpointNotFoundError(
        "pipeline directory with no component holding weights"
        + (f" ({', '.join(absent)} not here)" if absent else ""),
        path=path,
        fix="check that the component folders (vae/, transformer/, ...) were downloaded",
    )


def _raise_if_dangling(weight_set: WeightSet) -> None:
    # A link into a deleted blob still lists as a file; it must not pass for a present shard.
    dangling = [p for p in weight_set.files if not p.exists()]
    if dangling:
        raise IncompleteCheckpointError(
            "dangling link (its target is gone): " + ", ".join(p.name for p in dangling),
            path=dangling[0],
            fix="download the file again (huggingface_hub re-creates the link), or copy it in",
        )


def _components_hint(directory: Path) -> str | None:
    components = read_model_index(directory) if directory.is_dir() else None
    if not components:
        return None
    names = [c.name for c in components if (directory / c.name).is_dir()]
    return "this is a pipeline; pass subfolder= one of: " + ", ".join(names)
