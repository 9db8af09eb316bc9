"""``inspect_checkpoint``: what a checkpoint holds and what is wrong with it, from headers alone.

Never imports torch: safetensors headers are parsed by :mod:`ckptkit.format`.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

from ckptkit.check.info import CheckpointInfo, FileEntry, Problem, WeightSetInfo
from ckptkit.errors import CkptError
from ckptkit.format.components import check_component_name, pipeline_components
from ckptkit.format.confine import confine_enabled, enforce_confinement, is_outside
from ckptkit.format.dtypes import DTYPES, torch_itemsize
from ckptkit.format.file_kinds import refuse_non_checkpoint
from ckptkit.format.hub_files import dangling_link_fix, hub_repo_root, repo_folder_snapshot
from ckptkit.format.layout import WeightSet, discover_weight_sets, select_weight_set
from ckptkit.format.safe_files import confinement, lexists, regular_file_problem
from ckptkit.format.torch_pickle import TorchTensorEntry, scan_torch_file
from ckptkit.format.validate import check_weight_set
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = ["CheckpointInfo", "FileEntry", "Problem", "WeightSetInfo", "inspect_checkpoint"]

_SKIP_DIRS = {".cache", ".git", ".huggingface"}


def inspect_checkpoint(
    spec: str | os.PathLike[str],
    *,
    variant: str | None = None,
    confine: bool | None = None,
    **resolve_kwargs: Any,
) -> CheckpointInfo:
    """Describe a checkpoint: files, weight sets, tensors, parameters, dtypes, links, problems.

    Reads only headers and index files. Problems are reported, not raised, so a damaged
    checkpoint can be inspected too.

    Args:
        spec: a directory or weights file (or any form :func:`resolve_ckpt_dir` accepts).
        variant: the variant a load would ask for; decides which set is ``selected``.
        confine: refuse (:class:`UnsafeCheckpointError`) any file whose real path lies outside the
            checkpoint root, before reading it; ``None`` follows ``CKPTKIT_CONFINE``.
        resolve_kwargs: passed to :func:`resolve_ckpt_dir` for forms that are not local paths.

    Raises:
        UnsafeCheckpointError: with ``confine``, a file links outside the checkpoint.
        CheckpointNotFoundError: ``spec`` is a file that holds no weights (``model.tar.gz``, a
            config): it is refused, saying what it is, rather than its directory inspected.

    Example:
        >>> info = inspect_checkpoint("pixart/transformer")  # doctest: +SKIP
        >>> info.selected, info.parameter_count  # doctest: +SKIP
        ('diffusion_pytorch_model.safetensors', 610856960)
    """
    path = Path(os.path.expanduser(os.fspath(spec)))
    root: Path | None = None
    subfolder = resolve_kwargs.pop("subfolder", None)
    if not lexists(path):
        resolved = resolve_ckpt_dir(
            spec,
            subfolder=subfolder,
            variant=variant,
            variant_fallback="allow",
            confine=confine,
            **resolve_kwargs,
        )  # type: ignore[arg-type]
        path, root = resolved.path, resolved.root
    else:
        # A hub cache repo folder stands for the snapshot its ref (default main) names.
        path = repo_folder_snapshot(path, revision=resolve_kwargs.get("revision")) or path
        if subfolder:
            path = path / str(subfolder)
    selected_file = None
    if path.is_file() or (path.is_symlink() and not path.is_dir()):
        refuse_non_checkpoint(path)
        selected_file, path = path, path.parent
    # A hub snapshot is made of links into the repo's blobs/: judge links against the repo folder.
    root = root or hub_repo_root(path) or path
    if confine_enabled(confine) and path.is_dir():
        # Directories too: a component folder that is a link leaving the root is refused.
        files = [Path(d) / f for d, dirs, names in os.walk(path) for f in [*dirs, *names]]
        enforce_confinement([path, *files], root, confine=True)
    with confinement(root if confine_enabled(confine) else None):
        info = _inspect_dir(path, root, variant=variant, selected_file=selected_file)
    info.root = str(root)
    return info


def _inspect_dir(
    directory: Path,
    root: Path,
    *,
    variant: str | None,
    selected_file: Path | None,
    is_component: bool = False,
) -> CheckpointInfo:
    info = CheckpointInfo(path=str(directory))
    if not directory.is_dir():
        info.problems.append(
            Problem("error", "CheckpointNotFoundError", str(directory), f"{directory}: no such directory")
        )
        return info
    info.files = _list_files(directory, root, info.problems)
    try:
        components = pipeline_components(directory)
    except CkptError as exc:
        info.problems.append(Problem.from_error(exc))
        components = None
    if components is not None:
        for component in components:
            try:
                check_component_name(component.name, directory / "model_index.json")
            except CkptError as exc:  # never used as a path: "../x" would walk outside
                info.problems.append(Problem.from_error(exc))
                continue
            info.component_classes[component.name] = [component.library, component.class_name]
            sub = directory / component.name
            if sub.is_dir():
                info.components[component.name] = _inspect_dir(
                    sub, root, variant=variant, selected_file=None, is_component=True
                )
    try:
        sets = discover_weight_sets(directory)
    except CkptError as exc:
        info.problems.append(Problem.from_error(exc))
        return info
    info.variants = sorted({s.variant or "default" for s in sets}, key=lambda v: (v != "default", v))
    if not sets:
        # Schedulers and tokenizers hold no weights; a model directory (config.json) must.
        if components is None and (not is_component or (directory / "config.json").is_file()):
            info.problems.append(
                Problem(
                    "error", "CheckpointNotFoundError", str(directory), f"{directory}: no weights files here"
                )
            )
        return info
    chosen = None
    if selected_file is not None:
        chosen = next((s for s in sets if selected_file in s.files), None)
    if chosen is None:
        try:
            selection = select_weight_set(sets, variant=variant, variant_fallback="allow", where=directory)
            chosen = selection.weight_set
            if selection.warning:
                info.problems.append(Problem("warning", "warning", str(directory), selection.warning))
        except CkptError as exc:
            info.problems.append(Problem.from_error(exc))
    for weight_set in sets:
        info.weight_sets.append(
            WeightSetInfo(
                label=weight_set.label,
                name=weight_set.name,
                format=weight_set.format,
                variant=weight_set.variant,
                sharded=weight_set.sharded,
                index_file=weight_set.index_file.name if weight_set.index_file else None,
                files=[p.name for p in weight_set.files],
                missing=[p.name for p in weight_set.missing],
                selected=weight_set is chosen,
            )
        )
    if chosen is not None:
        info.selected = chosen.label
        _describe_selected(info, chosen)
    return info


def _describe_selected(info: CheckpointInfo, chosen: WeightSet) -> None:
    check = check_weight_set(chosen)
    info.problems.extend(Problem.from_error(e) for e in check.errors)
    info.problems.extend(
        Problem("warning", "warning", str(chosen.index_file or chosen.directory), w) for w in check.warnings
    )
    if chosen.format == "torch":
        _describe_torch(info, chosen)
        return
    if not check.headers:
        return
    tensors = [t for header in check.headers.values() for t in header.tensors.values()]
    info.tensor_count = len(tensors)
    info.parameter_count = sum(t.numel for t in tensors)
    info.total_bytes = sum(t.nbytes for t in tensors)
    by_dtype: Counter[str] = Counter()
    for tensor in tensors:
        by_dtype[tensor.dtype] += tensor.nbytes
    info.bytes_by_dtype = dict(sorted(by_dtype.items()))
    info.metadata = next(iter(check.headers.values())).metadata


def _describe_torch(info: CheckpointInfo, chosen: WeightSet) -> None:
    # Counted from the pickle alone; storages shared by tied weights are counted once in bytes.
    codes = {d.name: d.code for d in DTYPES.values()}
    entries: list[TorchTensorEntry] = []
    for path in chosen.files:
        try:
            scanned = scan_torch_file(path)
        except CkptError as exc:
            info.problems.append(Problem.from_error(exc))
            return
        if scanned is None:
            info.problems.append(
                Problem(
                    "warning",
                    "warning",
                    str(path),
                    f"{path}: pre-1.6 torch format; contents need torch to list",
                )
            )
            return
        if not scanned:
            info.problems.append(
                Problem(
                    "error",
                    "CorruptCheckpointError",
                    str(path),
                    f"{path}: holds no tensors (a training state without weights, or not a weights file)",
                )
            )
        entries.extend(scanned.values())
    by_dtype: Counter[str] = Counter()
    seen: set[tuple[str, str]] = set()
    for entry in entries:
        code = codes.get(entry.dtype, entry.dtype)
        storage = (code, entry.storage_key)
        if storage not in seen:
            seen.add(storage)
            by_dtype[code] += entry.storage_numel * torch_itemsize(code)
    info.tensor_count = len(entries)
    info.parameter_count = sum(e.numel for e in entries)
    info.bytes_by_dtype = dict(sorted(by_dtype.items()))
    info.total_bytes = sum(by_dtype.values())


def _list_files(directory: Path, root: Path, problems: list[Problem]) -> list[FileEntry]:
    entries = []
    real_root = os.path.realpath(root)
    for current, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for filename in sorted(filenames):
            full = Path(current) / filename
            rel = full.relative_to(directory).as_posix()
            target = os.readlink(full) if full.is_symlink() else None
            size = full.stat().st_size if full.exists() else None
            outside = False
            if target is not None:
                real = os.path.realpath(full)
                outside = is_outside(full, real_root)
                if size is None:
                    problems.append(
                        Problem(
                            "error",
                            "IncompleteCheckpointError",
                            str(full),
                            f"{full}: link to {target!r} dangles. Fix: {dangling_link_fix(full)}",
                        )
                    )
                elif outside:
                    problems.append(
                        Problem(
                            "warning",
                            "warning",
                            str(full),
                            f"{full}: links outside the checkpoint, to {real}",
                        )
                    )
            kind = regular_file_problem(full) if size is not None else None
            if kind is not None:
                problems.append(
                    Problem(
                        "error", "UnsafeCheckpointError", str(full), f"{full}: is {kind}, not a regular file"
                    )
                )
            if filename.endswith(".incomplete"):
                problems.append(
                    Problem("error", "IncompleteCheckpointError", str(full), f"{full}: unfinished download")
                )
            entries.append(FileEntry(rel, size, target, outside))
    return entries
