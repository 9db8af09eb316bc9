"""Local checkpoints: a directory or a weights file, and the weight set chosen in it.

Used by :mod:`ckptkit.resolve.resolve` for local paths and by :mod:`ckptkit.resolve.hub` for a
downloaded snapshot (so the hub needs nothing from the module that dispatches to it).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ckptkit.errors import CheckpointNotFoundError, CkptWarning, IncompleteCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.components import read_model_index
from ckptkit.format.layout import Selection, WeightSet, discover_weight_sets, select_weight_set
from ckptkit.format.naming import parse_weight_filename

__all__ = ["resolve_local"]


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
                    path.parent, Selection(weight_set), root=root or path.parent, **origin
                )
    single = WeightSet(path.parent, parsed.stem, parsed.format, parsed.variant, [path])
    return CheckpointDir.from_selection(path.parent, Selection(single), root=root or path.parent, **origin)


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
