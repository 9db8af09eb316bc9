"""Big-model placement with accelerate: ``device_map``, ``max_memory``, CPU and disk offload.

A model built on the meta device is placed across GPUs, CPU and disk straight from its checkpoint:
accelerate's ``infer_auto_device_map`` (with ``get_balanced_memory`` for ``"auto"``) makes the map
from sizes in the dtype the model will hold, each tensor is read once directly to its device, and
``dispatch_model`` installs the hooks, so the model runs forward as usual.

Disk offload costs no copy when the checkpoint is safetensors: the offload index points into the
original shard files (accelerate reads ``safetensors_file``/``weight_name`` entries). A torch-format
checkpoint is converted once into ``offload_folder``; later loads reuse the conversion.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ckptkit.errors import AmbiguousCheckpointError, CkptWarning
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.io.module_fill import FillPlan, StoredTensor, plan_module_fill
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.io.torch_files import load_torch_file, unwrap_state_dict
from ckptkit.placement.accelerate_map import (
    Device,
    device_of,
    dispatch_options,
    forget_meta_pointer,
    make_device_map,
    model_tensors,
    tie_weights,
)
from ckptkit.placement.device_map import DEVICE_MAP_MODES, TensorEntry, checkpoint_tensors
from ckptkit.placement.offload import convert_once, source_fingerprint, write_offload_index
from ckptkit.placement.placed import (
    fill_from_safetensors,
    fill_from_state_dict,
    keep_on_meta,
    set_module_tensor,
    torch_device,
)
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = ["PlacementResult", "infer_device_map", "load_with_device_map"]

logger = logging.getLogger("ckptkit")


@dataclass
class PlacementResult:
    """What :func:`load_with_device_map` did.

    Attributes:
        missing_keys: model tensors the checkpoint does not hold (tied copies excluded).
        unexpected_keys: checkpoint tensors the model has no place for.
        device_map: the map used (module name -> device), as ``model.hf_device_map``.
        offload_index: the accelerate offload index of the ``"disk"`` tensors.
        offload_folder: where the index (and, for torch sources, the converted weights) lives.
        converted: tensors written into ``offload_folder`` by this call (torch sources only; empty
            when an earlier conversion was reused or the source is safetensors).
    """

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    device_map: dict[str, Device] = field(default_factory=dict)
    offload_index: dict[str, dict[str, Any]] = field(default_factory=dict)
    offload_folder: Path | None = None
    converted: list[str] = field(default_factory=list)


def infer_device_map(
    ckpt: str | os.PathLike[str] | CheckpointDir,
    model: torch.nn.Module,
    *,
    device_map: str | Mapping[str, Any] = "auto",
    max_memory: Mapping[Any, int | str] | None = None,
    no_split_module_classes: Sequence[str] | None = None,
    dtype: object = None,
    keep_in_fp32_modules: Sequence[str] | None = None,
) -> dict[str, Device]:
    """The device map accelerate makes for ``model`` filled from ``ckpt``, without reading weights.

    Sizes are those the model will hold: each tensor in ``dtype`` when given (``_keep_in_fp32_modules``
    stay float32), else in the dtype the checkpoint stores.

    Args:
        ckpt: anything :func:`ckptkit.resolve_ckpt_dir` accepts.
        model: the model, usually built under ``accelerate.init_empty_weights()``.
        device_map: ``"auto"``/``"balanced"`` (even over GPUs), ``"balanced_low_0"``, ``"sequential"``,
            or a dict (checked and completed, then returned).
        max_memory: budgets per device, ``{0: "20GiB", "cpu": "64GiB", "disk": ...}`` (ints are bytes);
            ``None``: what is free now.
        no_split_module_classes: class names never split across devices; default
            ``model._no_split_modules``.
        dtype: the dtype the model will hold (``torch.bfloat16``, ``"bf16"``).
        keep_in_fp32_modules: modules that stay float32 under ``dtype``; default: the model's
            ``_keep_in_fp32_modules``.

    Returns:
        Module name -> device (GPU index, ``"cpu"`` or ``"disk"``).

    Raises:
        ValueError: a bad ``device_map``, ``max_memory`` or ``dtype``.
        CkptError: the checkpoint cannot be resolved or read.

    Example:
        >>> with accelerate.init_empty_weights():  # doctest: +SKIP
        ...     model = LlamaForCausalLM(config)
        >>> infer_device_map("./llama", model, max_memory={0: "20GiB", "cpu": "64GiB"})  # doctest: +SKIP
        {'model.embed_tokens': 0, 'model.layers.0': 0, ..., 'lm_head': 'cpu'}
    """
    ckpt = resolve_ckpt_dir(ckpt)
    tie_weights(model)
    entries = checkpoint_tensors(ckpt) if ckpt.format == "safetensors" else _torch_entries(_torch_state(ckpt))
    plan = _plan(ckpt, model, entries, dtype, keep_in_fp32_modules)
    held = _held_dtypes(plan, entries)
    return make_device_map(model, device_map, max_memory, no_split_module_classes, held)


def load_with_device_map(
    ckpt: str | os.PathLike[str] | CheckpointDir,
    model: torch.nn.Module,
    *,
    device_map: str | Mapping[str, Any] | int | torch.device,
    max_memory: Mapping[Any, int | str] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
    dtype: object = None,
    no_split_module_classes: Sequence[str] | None = None,
    strict: bool = True,
    offload_buffers: bool = False,
    mmap: bool | None = None,
    key_map: Callable[[str], str | None] | None = None,
    prefix: str | None = None,
    strip_prefixes: Sequence[str] | str | None = None,
    keep_in_fp32_modules: Sequence[str] | None = None,
) -> PlacementResult:
    """Fill a meta-built ``model`` from ``ckpt`` across GPUs, CPU and disk, and dispatch it.

    Each tensor is read once, straight to its device; ``"disk"`` tensors of a safetensors checkpoint
    are not read at all: the offload index points into the original shards. The model then runs
    forward as usual (accelerate's hooks move weights in and out).

    Args:
        ckpt: anything :func:`ckptkit.resolve_ckpt_dir` accepts.
        model: the model, built under ``accelerate.init_empty_weights()`` (so buffers the checkpoint
            lacks, like rotary tables, are real).
        device_map: ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"``, a dict
            (module name -> device, as :func:`infer_device_map` or ``ckptkit plan --device-map``
            print it), or one device (``"cpu"``, ``0``).
        max_memory: budgets per device (see :func:`infer_device_map`).
        offload_folder: where the offload index is written (``index.json``); required for torch
            sources with ``"disk"`` entries, which are converted there once.
        dtype: the dtype the model will hold; ``None``: as the checkpoint stores it.
        no_split_module_classes: default ``model._no_split_modules``.
        strict: raise when keys differ between checkpoint and model (before anything is read).
        offload_buffers: offload buffers of offloaded modules too (accelerate's option).
        mmap: ``None`` (default) or ``True``: ``"cpu"`` tensors of a safetensors checkpoint that need no cast
            stay file-backed (copy-on-write maps of the shards: nothing read until used, pages
            reclaimable), as transformers leaves them. ``False``: they are read into private memory.
        key_map: checkpoint key -> model key, or ``None`` to skip the tensor, applied before
            ``prefix``/``strip_prefixes``; default: keys as stored.
        prefix: keep only checkpoint keys under this prefix, and strip it.
        strip_prefixes: wrapper prefixes to remove (nested ones too; two keys that become one
            raise :class:`~ckptkit.AmbiguousCheckpointError`).
        keep_in_fp32_modules: modules that stay float32 under ``dtype``; default: the model's
            ``_keep_in_fp32_modules``.

    Returns:
        A :class:`PlacementResult`; the model is filled in place and ``model.hf_device_map`` is set.

    Raises:
        ModelMismatchError: shapes differ from the model's, or (``strict``) keys are missing or
            unexpected; raised before anything is read, as by every loading path.
        CorruptCheckpointError: a file is damaged.
        ValueError: a bad argument, a torch source with disk entries and no ``offload_folder``, or
            buffers left on the meta device that the checkpoint cannot fill.

    Example:
        >>> with accelerate.init_empty_weights():  # doctest: +SKIP
        ...     model = LlamaForCausalLM(config)
        >>> load_with_device_map("./llama", model, device_map="auto",  # doctest: +SKIP
        ...                      max_memory={0: "20GiB", "cpu": "30GiB"}, offload_folder="/tmp/offload")
        >>> model(input_ids).logits  # doctest: +SKIP
    """
    from accelerate import dispatch_model
    from accelerate.utils import find_tied_parameters, retie_parameters

    ckpt = resolve_ckpt_dir(ckpt)
    state = _torch_state(ckpt) if ckpt.format == "torch" else None
    mapped_names, entries = _renamed(
        checkpoint_tensors(ckpt) if state is None else _torch_entries(state), key_map
    )
    tie_weights(model)
    tied = find_tied_parameters(model)
    plan = _plan(
        ckpt,
        model,
        entries,
        dtype,
        keep_in_fp32_modules,
        prefix=prefix,
        strip_prefixes=strip_prefixes,
        strict=strict,
    )
    # From here on, checkpoint tensors go by their model names.
    by_name = {e.name: e for e in entries}
    entries = [dataclasses.replace(by_name[source], name=name) for name, source in plan.selection.items()]
    stored_names = {name: mapped_names[source] for name, source in plan.selection.items()}
    if state is not None:
        state = {name: state[source] for name, source in stored_names.items()}
    result = _check_buffers(ckpt, model, plan)
    held = _held_dtypes(plan, entries)
    if isinstance(device_map, (int, torch.device)) or (
        isinstance(device_map, str) and device_map not in DEVICE_MAP_MODES
    ):
        device_map = {"": device_map if isinstance(device_map, int) else str(device_map)}
    placed = make_device_map(model, device_map, max_memory, no_split_module_classes, held)
    result.device_map = placed
    folder = Path(offload_folder) if offload_folder is not None else None
    result.offload_folder = folder

    targets = _targets(model, entries, placed)
    if state is None:
        result.offload_index = fill_from_safetensors(
            ckpt.weight_files, model, targets, held, mmap=mmap is not False, names=stored_names
        )
    else:
        fill_from_state_dict(state, model, targets, held, mmap=mmap is not False)
        _convert_disk_entries(ckpt, state, model, targets, held, folder, result)
    _tie_offloaded(tied, result.offload_index)
    retie_parameters(model, tied)
    if folder is not None and result.offload_index and state is None:
        write_offload_index(folder, result.offload_index)
    dispatch_model(
        model,
        device_map=placed,
        offload_dir=os.fspath(folder) if folder is not None else None,
        offload_index=result.offload_index or None,
        offload_buffers=offload_buffers,
        state_dict=_fill_missing(model, result.missing_keys, placed),
        **dispatch_options(placed),
    )
    if any(model.get_parameter(group[0]).is_meta for group in tied if group):
        forget_meta_pointer(model)
    return result


# -- planning ----------------------------------------------------------------------------------


def _plan(
    ckpt: CheckpointDir,
    model: torch.nn.Module,
    entries: Sequence[TensorEntry],
    dtype: object,
    keep_in_fp32_modules: Sequence[str] | None,
    *,
    prefix: str | None = None,
    strip_prefixes: Sequence[str] | str | None = None,
    strict: bool = False,
) -> FillPlan:
    """The module-filling plan every loading path uses (keys, ties, shapes, dtypes)."""
    cast = dtype if dtype is not None else (ckpt.selection.cast_dtype if ckpt.selection else None)
    stored = [StoredTensor(e.name, tuple(e.shape), to_torch_dtype(e.dtype)) for e in entries]
    return plan_module_fill(
        model,
        stored,
        prefix=prefix,
        strip_prefixes=strip_prefixes,
        dtype=to_torch_dtype(cast) if cast is not None else None,
        keep_in_fp32=keep_in_fp32_modules,
        strict=strict,
        where=ckpt.path,
    )


def _held_dtypes(plan: FillPlan, entries: Sequence[TensorEntry]) -> dict[str, torch.dtype]:
    """Model tensor name -> the dtype it will hold, for floating tensors the checkpoint fills."""
    held = {}
    for entry in entries:
        if entry.name in plan.slots and entry.floating:
            stored = to_torch_dtype(entry.dtype)
            held[entry.name] = plan.cast(entry.name, stored) or stored
    return held


def _check_buffers(ckpt: CheckpointDir, model: torch.nn.Module, plan: FillPlan) -> PlacementResult:
    lacking = [
        n
        for n, t in model.named_buffers()
        if t.device.type == "meta" and n not in plan.selection and n not in plan.slots
    ]
    if lacking:
        raise ValueError(
            f"buffers {lacking[:5]} are on the meta device and the checkpoint does not hold them; "
            "build the model under accelerate.init_empty_weights() so buffers stay real"
        )
    if plan.missing_keys:
        warnings.warn(
            f"{ckpt.path}: model tensors not in the checkpoint: {plan.missing_keys[:10]}",
            CkptWarning,
            stacklevel=3,
        )
    return PlacementResult(missing_keys=list(plan.missing_keys), unexpected_keys=list(plan.unexpected_keys))


# -- loading -----------------------------------------------------------------------------------


def _torch_state(ckpt: CheckpointDir) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in ckpt.weight_files:
        state.update(unwrap_state_dict(load_torch_file(path, mmap=True), None, path))
    return state


def _renamed(
    entries: list[TensorEntry], key_map: Callable[[str], str | None] | None
) -> tuple[dict[str, str], list[TensorEntry]]:
    """Entries under their model names, and model name -> stored name."""
    if key_map is None:
        return {e.name: e.name for e in entries}, entries
    stored: dict[str, str] = {}
    renamed = []
    for entry in entries:
        target = key_map(entry.name)
        if target is None:
            continue
        if target in stored:
            raise AmbiguousCheckpointError(
                f"key_map maps both {stored[target]!r} and {entry.name!r} to {target!r}",
                path=None,
                fix="make key_map give each checkpoint key its own name",
            )
        stored[target] = entry.name
        renamed.append(dataclasses.replace(entry, name=target))
    return stored, renamed


def _torch_entries(state: Mapping[str, torch.Tensor]) -> list[TensorEntry]:
    return [TensorEntry(n, str(t.dtype).removeprefix("torch."), tuple(t.shape), 0) for n, t in state.items()]


def _targets(
    model: torch.nn.Module, entries: Sequence[TensorEntry], placed: Mapping[str, Device]
) -> dict[str, Device]:
    """Checkpoint tensor -> its device; buffers of disk modules stay real on the CPU (accelerate
    moves them to the execution device itself)."""
    params = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    names = model_tensors(model)
    targets: dict[str, Device] = {}
    for entry in entries:
        if entry.name in names:
            device = device_of(entry.name, placed)
            targets[entry.name] = (
                "cpu" if device is None or (device == "disk" and entry.name not in params) else device
            )
    return targets


def _convert_disk_entries(
    ckpt: CheckpointDir,
    state: Mapping[str, torch.Tensor],
    model: torch.nn.Module,
    targets: Mapping[str, Device],
    held: Mapping[str, torch.dtype],
    folder: Path | None,
    result: PlacementResult,
) -> None:
    """Torch sources have no file accelerate can point into: convert their disk tensors once."""
    disk = sorted(n for n, d in targets.items() if d == "disk")
    if not disk:
        return
    if folder is None:
        raise ValueError(
            f"{ckpt.path}: {len(disk)} tensors go to disk and this torch-format checkpoint must be converted "
            "for that; pass offload_folder= (it is converted once and reused)"
        )
    entries, result.converted = convert_once(state, disk, held, folder, source_fingerprint(ckpt.weight_files))
    result.offload_index.update(entries)
    for name, entry in entries.items():
        keep_on_meta(model, name, entry["shape"], held.get(name))
    if result.converted:
        logger.info("converted %d tensors for disk offload into %s", len(result.converted), folder)


def _fill_missing(
    model: torch.nn.Module, missing: Sequence[str], placed: Mapping[str, Device]
) -> dict[str, torch.Tensor] | None:
    """Zeros for tensors the checkpoint lacks (``strict=False``), so the model can be dispatched.

    Returns the state dict accelerate's hooks read offloaded weights from when some of them are
    ``"disk"`` ones (they cannot go into the offload index), else ``None``.
    """
    from accelerate.utils import extract_submodules_state_dict

    extra = {}
    for name in missing:
        tensor = (
            model.get_parameter(name) if name in dict(model.named_parameters()) else model.get_buffer(name)
        )
        if tensor.device.type != "meta":
            continue
        device = device_of(name, placed)
        value = torch.zeros(tensor.shape, dtype=tensor.dtype)
        if device == "disk":
            extra[name] = value
        else:
            set_module_tensor(
                model, name, value.to(torch_device(device)) if device not in (None, "cpu") else value
            )  # type: ignore[arg-type]
    if not extra:
        return None
    gpus = [d for d in placed.values() if d not in ("cpu", "disk")]
    if gpus:  # dispatch_model would have taken the cpu modules' weights; with a state_dict it does not
        cpu_modules = [name for name, device in placed.items() if device == "cpu"]
        extra.update(extract_submodules_state_dict(model.state_dict(), cpu_modules))
    return extra


def _tie_offloaded(tied: Sequence[Sequence[str]], index: dict[str, dict[str, Any]]) -> None:
    """Tied copies of a disk-offloaded tensor read the same entry."""
    for group in tied:
        source = next((index[n] for n in group if n in index), None)
        if source is not None:
            for name in group:
                index.setdefault(name, source)
