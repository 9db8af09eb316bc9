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

from ckptkit.errors import CkptError, CkptWarning, CorruptCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.io.torch_files import load_torch_file, unwrap_state_dict
from ckptkit.placement.device_map import (
    DEVICE_MAP_MODES,
    TensorEntry,
    checkpoint_tensors,
    normalize_max_memory,
)
from ckptkit.placement.offload import convert_once, source_fingerprint, write_offload_index
from ckptkit.placement.placed import (
    fill_from_safetensors,
    fill_from_state_dict,
    keep_on_meta,
    set_module_tensor,
    torch_device,
)

__all__ = ["PlacementResult", "infer_device_map", "load_with_device_map"]

logger = logging.getLogger("ckptkit")

Device = int | str


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
    from ckptkit.resolve.resolve import resolve_ckpt_dir

    ckpt = resolve_ckpt_dir(ckpt)
    _tie(model)
    entries = checkpoint_tensors(ckpt) if ckpt.format == "safetensors" else _torch_entries(_torch_state(ckpt))
    held = _held_dtypes(model, entries, dtype, ckpt)
    return _make_device_map(model, device_map, max_memory, no_split_module_classes, held)


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
    mmap: bool = False,
    key_map: Callable[[str], str | None] | None = None,
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
        mmap: ``"cpu"`` tensors of a safetensors checkpoint that need no cast stay file-backed
            (copy-on-write maps of the shards: nothing read until used, pages reclaimable) instead
            of being read into private memory.
        key_map: checkpoint key -> model key, or ``None`` to skip the tensor (how ``prefix`` and
            ``strip_prefixes`` of ``load_sharded`` reach here); default: keys as stored.

    Returns:
        A :class:`PlacementResult`; the model is filled in place and ``model.hf_device_map`` is set.

    Raises:
        CorruptCheckpointError: keys or shapes do not match the model (``strict``), or a file is damaged.
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

    from ckptkit.resolve.resolve import resolve_ckpt_dir

    ckpt = resolve_ckpt_dir(ckpt)
    state = _torch_state(ckpt) if ckpt.format == "torch" else None
    stored_names, entries = _renamed(
        checkpoint_tensors(ckpt) if state is None else _torch_entries(state), key_map
    )
    if state is not None and key_map is not None:
        state = {e.name: state[stored_names[e.name]] for e in entries}
    _tie(model)
    tied = find_tied_parameters(model)
    result = _match_keys(ckpt, model, entries, tied, strict)
    held = _held_dtypes(model, entries, dtype, ckpt)
    if isinstance(device_map, (int, torch.device)) or (
        isinstance(device_map, str) and device_map not in DEVICE_MAP_MODES
    ):
        device_map = {"": device_map if isinstance(device_map, int) else str(device_map)}
    placed = _make_device_map(model, device_map, max_memory, no_split_module_classes, held)
    result.device_map = placed
    folder = Path(offload_folder) if offload_folder is not None else None
    result.offload_folder = folder

    targets = _targets(model, entries, placed)
    if state is None:
        result.offload_index = fill_from_safetensors(
            ckpt.weight_files, model, targets, held, mmap=mmap, names=stored_names
        )
    else:
        fill_from_state_dict(state, model, targets, held)
        _convert_disk_entries(ckpt, state, model, targets, held, folder, result)
    _tie_offloaded(tied, result.offload_index)
    retie_parameters(model, tied)
    if folder is not None and result.offload_index and state is None:
        write_offload_index(folder, result.offload_index)
    # older accelerate (1.1 and 1.6 at least) refuses a map that is all "disk" unless told to hook it
    # with the CPU as the execution device; newer versions do just that by themselves.
    whole_disk: dict[str, Any] = (
        {"main_device": "cpu", "force_hooks": True} if set(placed.values()) == {"disk"} else {}
    )
    dispatch_model(
        model,
        device_map=placed,
        offload_dir=os.fspath(folder) if folder is not None else None,
        offload_index=result.offload_index or None,
        offload_buffers=offload_buffers,
        state_dict=_fill_missing(model, result.missing_keys, placed),
        **whole_disk,
    )
    if any(model.get_parameter(group[0]).is_meta for group in tied if group):
        _forget_meta_pointer(model)
    return result


def _forget_meta_pointer(model: torch.nn.Module) -> None:
    """Stop accelerate's hooks sharing tied weights by pointer when a tied group is left on disk.

    Older accelerate (1.1 and 1.6 at least) keys tied weights by ``data_ptr()``, which is 0 for every
    meta tensor: the first disk tensor loaded would be handed to every other disk tensor of the model
    (a layer norm running with the embedding), and some versions then fail to release it. Each tied name has its own
    offload-index entry, so the hooks read it by name instead, as newer versions do for tied weights
    on disk (at the cost of reading a shared tensor once per name).
    """
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        for one in [*getattr(hook, "hooks", ()), hook]:
            if isinstance(getattr(one, "tied_params_map", None), dict):
                one.tied_params_map = None
                one.tied_params_names = set()


# -- planning ----------------------------------------------------------------------------------


def _tie(model: torch.nn.Module) -> None:
    """Tie shared weights as ``from_pretrained`` does: transformers v5 ties them only on load."""
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()


def _make_device_map(
    model: torch.nn.Module,
    device_map: str | Mapping[str, Any],
    max_memory: Mapping[Any, int | str] | None,
    no_split: Sequence[str] | None,
    held: Mapping[str, torch.dtype],
) -> dict[str, Device]:
    from accelerate.utils import get_balanced_memory, infer_auto_device_map

    if isinstance(device_map, Mapping):
        return _complete_device_map(model, dict(device_map))
    if device_map not in DEVICE_MAP_MODES:
        raise ValueError(
            f"device_map must be one of {DEVICE_MAP_MODES}, a dict or a device, not {device_map!r}"
        )
    classes = list(no_split if no_split is not None else getattr(model, "_no_split_modules", None) or [])
    budgets: dict[Any, Any] | None = (
        dict(normalize_max_memory(max_memory)) if max_memory is not None else None
    )
    special = {name: str(d).removeprefix("torch.") for name, d in held.items()}
    if device_map != "sequential":
        try:
            budgets = get_balanced_memory(
                model,
                max_memory=budgets,
                no_split_module_classes=classes,
                special_dtypes=special,
                low_zero=device_map == "balanced_low_0",
            )
        except RuntimeError as exc:
            if not any(isinstance(d, int) for d in budgets or ()):
                raise
            # older accelerate (1.6 at least) resolves GPU indices through torch.device, which fails without one.
            raise CkptError(
                f"the installed accelerate cannot balance GPU budgets on a machine without GPUs ({exc})",
                fix="plan from the headers with ckptkit.plan_device_map (or `ckptkit plan`), which needs "
                "no GPU, pass device_map='sequential', or upgrade accelerate",
            ) from None
    placed = infer_auto_device_map(
        model, max_memory=budgets, no_split_module_classes=classes, special_dtypes=special
    )
    return dict(placed)


def _complete_device_map(model: torch.nn.Module, device_map: dict[str, Any]) -> dict[str, Device]:
    """A user's (or a header plan's) map, plus a device for tensors it does not cover.

    A plan made from headers cannot see tensors the file lacks: tied copies (they follow the tensor
    they share) and non-persistent buffers (they go to the main device: the first GPU, else the CPU).
    """
    from accelerate.utils import find_tied_parameters

    cleaned: dict[str, Device] = {}
    for name, device in device_map.items():
        if isinstance(device, torch.device):
            device = device.index if device.type == "cuda" and device.index is not None else str(device)
        elif isinstance(device, str) and device.isdigit():
            device = int(device)
        cleaned[str(name)] = device
    if not cleaned:
        raise ValueError("device_map is empty")
    # dispatch_model's main device: the first accelerator in the map, else the CPU
    main = sorted((d for d in cleaned.values() if d not in ("cpu", "disk")), key=str)
    first: Device = main[0] if main else "cpu"
    partners = {name: group for group in find_tied_parameters(model) for name in group}
    for name in _model_tensors(model):
        if _device_of(name, cleaned) is not None:
            continue
        covered = [_device_of(other, cleaned) for other in partners.get(name, [])]
        device = next((d for d in covered if d is not None), first)
        # accelerate's map names modules: the tensor's own module takes the entry
        module = name.rpartition(".")[0]
        logger.info("device_map does not cover %s; placing %r on %s", name, module, device)
        cleaned[module] = device
    return cleaned


def _device_of(name: str, device_map: Mapping[str, Device]) -> Device | None:
    parts = name.split(".")
    for depth in range(len(parts), -1, -1):
        prefix = ".".join(parts[:depth])
        if prefix in device_map:
            return device_map[prefix]
    return None


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    return tensors


def _held_dtypes(
    model: torch.nn.Module, entries: Sequence[TensorEntry], dtype: object, ckpt: CheckpointDir
) -> dict[str, torch.dtype]:
    """Model tensor name -> the dtype it will hold, for floating tensors the checkpoint fills."""
    cast = dtype if dtype is not None else (ckpt.selection.cast_dtype if ckpt.selection else None)
    target = to_torch_dtype(cast) if cast is not None else None
    keep_fp32 = list(getattr(model, "_keep_in_fp32_modules", None) or []) if dtype is not None else []
    names = _model_tensors(model)
    held = {}
    for entry in entries:
        if entry.name not in names or not entry.floating:
            continue
        if target is None:
            held[entry.name] = to_torch_dtype(entry.dtype)
        elif any(f".{m}." in f".{entry.name}" for m in keep_fp32):
            held[entry.name] = torch.float32
        else:
            held[entry.name] = target
    return held


def _match_keys(
    ckpt: CheckpointDir,
    model: torch.nn.Module,
    entries: Sequence[TensorEntry],
    tied: Sequence[Sequence[str]],
    strict: bool,
) -> PlacementResult:
    expected = set(model.state_dict(keep_vars=True))
    tensors = _model_tensors(model)
    stored = {e.name: e for e in entries}
    shared = {name for group in tied if any(n in stored for n in group) for name in group}
    missing = sorted(expected - set(stored) - shared)
    unexpected = sorted(set(stored) - set(tensors))
    wrong = [
        f"{n} {list(stored[n].shape)} (model {list(tensors[n].shape)})"
        for n in stored
        if n in tensors and tuple(tensors[n].shape) != stored[n].shape
    ]
    if wrong:
        raise CorruptCheckpointError(
            f"{len(wrong)} tensors have another shape than the model's: {', '.join(wrong[:5])}",
            path=ckpt.path,
            fix="build the model from the config that came with this checkpoint",
        )
    if strict and (missing or unexpected):
        raise CorruptCheckpointError(
            f"checkpoint does not match the model: missing {missing[:5]}{' ...' if len(missing) > 5 else ''}"
            f" ({len(missing)}), unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
            f" ({len(unexpected)})",
            path=ckpt.path,
            fix="pass strict=False to load what matches",
        )
    lacking = [
        n
        for n, t in model.named_buffers()
        if t.device.type == "meta" and n not in stored and not (n in expected and not strict)
    ]
    if lacking:
        raise ValueError(
            f"buffers {lacking[:5]} are on the meta device and the checkpoint does not hold them; "
            "build the model under accelerate.init_empty_weights() so buffers stay real"
        )
    if missing:
        warnings.warn(
            f"{ckpt.path}: model tensors not in the checkpoint: {missing[:10]}", CkptWarning, stacklevel=3
        )
    return PlacementResult(missing_keys=missing, unexpected_keys=unexpected)


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
            raise ValueError(f"key_map maps both {stored[target]!r} and {entry.name!r} to {target!r}")
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
    names = _model_tensors(model)
    targets: dict[str, Device] = {}
    for entry in entries:
        if entry.name in names:
            device = _device_of(entry.name, placed)
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
        device = _device_of(name, placed)
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
