"""``inspect_checkpoint``: what a checkpoint holds and what is wrong with it, from headers alone.

Never imports torch: safetensors headers are parsed by :mod:`ckptkit.format`.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ckptkit.errors import CkptError
from ckptkit.format.components import check_component_name, read_model_index
from ckptkit.format.confine import confine_enabled, enforce_confinement, is_outside
from ckptkit.format.dtypes import DTYPES, torch_itemsize
from ckptkit.format.hub_files import hub_repo_root, repo_folder_snapshot
from ckptkit.format.layout import WeightSet, discover_weight_sets, select_weight_set
from ckptkit.format.safe_files import confinement, lexists, regular_file_problem
from ckptkit.format.torch_pickle import TorchTensorEntry, scan_torch_file
from ckptkit.format.validate import check_weight_set
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = ["CheckpointInfo", "FileEntry", "Problem", "WeightSetInfo", "inspect_checkpoint"]

_SKIP_DIRS = {".cache", ".git", ".huggingface"}


@dataclass
class Problem:
    """One thing wrong, with the file it is about.

    Attributes:
        severity: ``"error"`` (loading would fail) or ``"warning"``.
        kind: the ckptkit error class that loading raises (``"IncompleteCheckpointError"``), or
            ``"warning"``.
        path: the file or directory.
        message: the full message, fix included.
    """

    severity: str
    kind: str
    path: str | None
    message: str

    @classmethod
    def from_error(cls, error: CkptError, severity: str = "error") -> Problem:
        return cls(severity, type(error).__name__, error.path, str(error))


@dataclass
class FileEntry:
    """A file of the checkpoint: its name relative to the directory, size, and link target."""

    name: str
    size: int | None
    link_target: str | None = None
    outside_root: bool = False


@dataclass
class WeightSetInfo:
    """One weight set as :func:`inspect_checkpoint` reports it."""

    label: str
    name: str
    format: str
    variant: str | None
    sharded: bool
    index_file: str | None
    files: list[str]
    missing: list[str]
    selected: bool = False


@dataclass
class CheckpointInfo:
    """What :func:`inspect_checkpoint` found.

    Attributes:
        path: the directory inspected.
        files: every file under it (download bookkeeping excluded), with sizes and link targets.
        weight_sets: every weight set found; ``selected`` marks the one a load would use.
        selected: the label of that set, or ``None``.
        variants: variants present (``"default"`` for no variant).
        tensor_count, parameter_count, total_bytes, bytes_by_dtype: of the selected set
            (``None`` for torch pickles, whose contents need torch to read).
        metadata: the ``__metadata__`` of the selected set's first shard.
        links: the files that are symlinks, with where they point.
        components: for a pipeline, component name -> its own :class:`CheckpointInfo`.
        problems: everything wrong, each naming its file.
        root: the checkpoint root links are judged against (the ``models--org--name`` folder for a
            hub snapshot, else the directory inspected).
    """

    path: str
    files: list[FileEntry] = field(default_factory=list)
    weight_sets: list[WeightSetInfo] = field(default_factory=list)
    selected: str | None = None
    variants: list[str] = field(default_factory=list)
    tensor_count: int | None = None
    parameter_count: int | None = None
    total_bytes: int | None = None
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    components: dict[str, CheckpointInfo] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    component_classes: dict[str, list[str | None]] = field(default_factory=dict)
    root: str | None = None

    @property
    def links(self) -> list[FileEntry]:
        return [f for f in self.files if f.link_target is not None]

    @property
    def ok(self) -> bool:
        """No error anywhere (warnings allowed), components included."""
        return not any(p.severity == "error" for p in self.problems) and all(
            c.ok for c in self.components.values()
        )

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; its keys are stable for scripts."""
        result = asdict(self)
        result["ok"] = self.ok
        result["components"] = {name: info.to_dict() for name, info in self.components.items()}
        return result


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
        components = read_model_index(directory)
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
                            f"{full}: link to {target!r} dangles",
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
