"""Local checkpoints: a directory, a weights file or a pipeline, and the weight sets chosen in it.

Used by :mod:`ckptkit.resolve.resolve` for local paths and by :mod:`ckptkit.resolve.hub` for a
downloaded snapshot (so the hub needs nothing from the module that dispatches to it).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

from ckptkit.errors import CheckpointNotFoundError, CkptError, CkptWarning, IncompleteCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.components import (
    Component,
    check_subfolder,
    choose_components,
    components_not_here,
    pipeline_components,
    select_components,
)
from ckptkit.format.file_kinds import is_dcp_directory
from ckptkit.format.hub_paths import dangling_link_fix, hub_repo_root
from ckptkit.format.layout import Selection, WeightSet, discover_weight_sets, select_weight_set
from ckptkit.format.naming import parse_weight_filename
from ckptkit.format.safe_files import open_regular, regular_file_problem

__all__ = ["resolve_local"]


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
        check_subfolder(subfolder, path)
        # Links are judged against the folder given, not the component: a component that is a
        # link leaving the pipeline is outside.
        root = root or path
        path = path / subfolder
        if not path.exists():
            raise CheckpointNotFoundError(
                f"subfolder {subfolder!r} does not exist",
                path=path,
                fix=_components_hint(path.parent) or "check the subfolder name",
            )
    if path.is_file() or (path.is_symlink() and not path.is_dir()):
        return _resolve_file(path, variant=variant, root=root, subfolder=subfolder, **origin)
    if components is not None:
        select_components(path, components)  # a pipeline, those components, their folders here
    index = pipeline_components(path) if components is not None or weights_name is None else None
    if index is not None:
        pipeline = _resolve_pipeline(
            path,
            index,
            components=components,
            variant=variant,
            variant_fallback=variant_fallback,
            root=root or path,
            **origin,
        )
        if pipeline is not None:
            return pipeline
    sets = discover_weight_sets(path)
    if not sets:
        hint = _components_hint(path)
        if is_dcp_directory(path):
            hint = "this is a torch.distributed.checkpoint directory: write it as safetensors first (resave)"
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


def _resolve_pipeline(
    path: Path,
    index: list[Component],
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
    named = [c.name for c in index]
    chosen = choose_components(named, components, where=path)
    found: dict[str, CheckpointDir] = {}
    absent = []
    for component in index:
        if component.name not in chosen:
            continue
        folder = path / component.name
        if not folder.is_dir():
            if component.class_name is not None:  # with components=, select_components said so
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
        raise components_not_here(path, absent)
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
    for path in dangling:
        problem = regular_file_problem(path) or ""
        if problem != "missing" and not problem.startswith("a dangling"):
            os.close(open_regular(path))  # a link loop, an unreadable target: raises what it is
    if dangling:
        raise IncompleteCheckpointError(
            "dangling link (its target is gone): " + ", ".join(p.name for p in dangling),
            path=dangling[0],
            fix=dangling_link_fix(dangling[0])
            if hub_repo_root(dangling[0]) is None
            else "download the file again (huggingface_hub re-creates the link), or copy it in",
        )


def _components_hint(directory: Path) -> str | None:
    try:
        components = pipeline_components(directory) if directory.is_dir() else None
    except CkptError:
        return None
    if not components:
        return None
    names = [c.name for c in components if (directory / c.name).is_dir()]
    return "this is a pipeline; pass subfolder= one of: " + ", ".join(names)
