"""``resolve_ckpt_dir``: any way of naming a checkpoint -> one concrete, validated local directory."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ckptkit.checkpoint import CheckpointDir
from ckptkit.errors import CheckpointNotFoundError, CkptWarning
from ckptkit.format.components import read_model_index
from ckptkit.format.layout import WeightSet, discover_weight_sets, select_weight_set
from ckptkit.format.naming import parse_weight_filename

__all__ = ["resolve_ckpt_dir", "resolve_local"]


def resolve_ckpt_dir(
    spec: str | os.PathLike[str] | CheckpointDir,
    *,
    subfolder: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    variant: str | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    allow_patterns: list[str] | str | None = None,
    variant_fallback: str = "warn",
    weights_name: str | None = None,
) -> CheckpointDir:
    """Turn any way of naming a checkpoint into one concrete, validated local directory.

    Args:
        spec: a local directory or weights file, or a :class:`CheckpointDir`.
        subfolder: a component of a pipeline (``"vae"``, ``"transformer"``).
        revision: branch, tag or commit (hub forms).
        cache_dir: the hub cache to look in (hub forms).
        variant: the variant wanted (``"fp16"``); see the variant rules.
        local_files_only: never download (hub forms).
        token: hub token (hub forms).
        allow_patterns: override the files to download (hub forms).
        variant_fallback: ``"warn"``, ``"allow"`` or ``"error"``.
        weights_name: only consider weights of this name (``"model"``, ``"diffusion_pytorch_model"``).

    Returns:
        The :class:`CheckpointDir`.

    Raises:
        CheckpointNotFoundError: nothing found at ``spec``.
        VariantNotFoundError: the variant rules refuse.
        IncompleteCheckpointError: the selected set misses files.

    Example:
        >>> ckpt = resolve_ckpt_dir("./pixart", subfolder="transformer", variant="fp16")  # doctest: +SKIP
        >>> ckpt.weight_files  # doctest: +SKIP
        [PosixPath('pixart/transformer/diffusion_pytorch_model.fp16.safetensors')]
    """
    if isinstance(spec, CheckpointDir) and subfolder is None:
        return spec
    path = Path(os.path.expanduser(os.fspath(spec)))
    if path.exists() or path.is_symlink():
        return resolve_local(
            path,
            subfolder=subfolder,
            variant=variant,
            variant_fallback=variant_fallback,
            weights_name=weights_name,
        )
    raise CheckpointNotFoundError(
        "no such file or directory",
        path=path,
        fix="check the path; hub repo ids are resolved once the hub forms are installed",
    )


def resolve_local(
    path: str | os.PathLike[str],
    *,
    subfolder: str | None = None,
    variant: str | None = None,
    variant_fallback: str = "warn",
    weights_name: str | None = None,
    root: Path | None = None,
    **origin: object,
) -> CheckpointDir:
    """Resolve a local directory or weights file (see :func:`resolve_ckpt_dir`).

    Args:
        origin: ``repo_id``/``revision`` to record on the result when the path came from a hub.
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
    if selection.warning:
        warnings.warn(selection.warning, CkptWarning, stacklevel=3)
    return CheckpointDir.from_selection(path, selection, subfolder=subfolder, root=root or path, **origin)


def _resolve_file(path: Path, *, variant: str | None, root: Path | None, **origin: object) -> CheckpointDir:
    from ckptkit.format.layout import Selection

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


def _components_hint(directory: Path) -> str | None:
    components = read_model_index(directory) if directory.is_dir() else None
    if not components:
        return None
    names = [c.name for c in components if (directory / c.name).is_dir()]
    return "this is a pipeline; pass subfolder= one of: " + ", ".join(names)
