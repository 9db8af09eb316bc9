"""Filling a meta-built module whose tensors go to different devices, each read once.

The target of every tensor is given (a GPU index, ``"cpu"`` or ``"disk"``): GPU and CPU tensors are
read (a copy-on-write view of the file with ``mmap``, else one parallel ``preadv`` pass into
private memory or, for a GPU, through pinned double-buffered staging) and put in place; a
``"disk"`` tensor of a safetensors file is not read at all, it becomes an accelerate offload-index
entry pointing into that file, and its parameter stays on the meta device in the dtype accelerate's
hook will cast it to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ckptkit.format.safetensors_header import read_header
from ckptkit.io.reader import FileMaps, TensorRead, read_tensors
from ckptkit.io.tensors import to_torch_dtype

__all__ = [
    "fill_from_safetensors",
    "fill_from_state_dict",
    "keep_on_meta",
    "set_module_tensor",
    "torch_device",
]

Device = int | str


def torch_device(device: Device) -> torch.device:
    """``0`` -> ``cuda:0``; strings as torch reads them."""
    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)


def set_module_tensor(model: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    """Put ``value`` in place of the parameter or buffer ``name`` (keeping ``requires_grad``)."""
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    old = module._parameters.get(leaf)
    if leaf in module._parameters and old is not None:
        grad = old.requires_grad and (value.is_floating_point() or value.is_complex())
        module._parameters[leaf] = torch.nn.Parameter(value, requires_grad=grad)
    else:
        module._buffers[leaf] = value


def keep_on_meta(model: torch.nn.Module, name: str, shape: Sequence[int], dtype: torch.dtype | None) -> None:
    """Leave an offloaded parameter on meta, in the dtype accelerate's hook casts its value to."""
    if dtype is not None and model.get_parameter(name).dtype != dtype:
        set_module_tensor(model, name, torch.empty(tuple(shape), dtype=dtype, device="meta"))


def fill_from_safetensors(
    files: Sequence[str | os.PathLike[str]],
    model: torch.nn.Module,
    targets: Mapping[str, Device],
    dtypes: Mapping[str, torch.dtype],
    *,
    mmap: bool = False,
    names: Mapping[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Fill ``model`` from safetensors ``files``; returns the offload index of the ``"disk"`` tensors.

    Args:
        files: the shards.
        model: the module; tensors named in ``targets`` are replaced.
        targets: tensor name -> device; names absent are skipped.
        dtypes: tensor name -> dtype to hold (floating tensors; absent: as stored).
        mmap: ``"cpu"`` tensors needing no cast become copy-on-write maps of the file.
        names: model name -> stored name where they differ (default: the same).
    """
    stored_as = dict(names) if names is not None else {n: n for n in targets}
    model_name = {stored: name for name, stored in stored_as.items() if name in targets}
    index: dict[str, dict[str, Any]] = {}
    reads: list[TensorRead] = []  # everything not mapped: read at the end, in parallel
    filled: list[tuple[str, torch.Tensor]] = []
    maps = FileMaps()
    for path in files:
        header = read_header(path)
        found = [n for n in header.tensors if n in model_name]
        if not found:
            continue
        for key in found:
            name = model_name[key]
            info, dtype, device = header.tensors[key], dtypes.get(name), targets[name]
            stored = to_torch_dtype(info.dtype)
            if device == "disk":
                index[name] = {
                    "safetensors_file": os.path.abspath(path),
                    "weight_name": key,
                    "dtype": str(dtype or stored).removeprefix("torch."),
                }
                keep_on_meta(model, name, info.shape, dtype)
                continue
            if mmap and device == "cpu" and dtype in (None, stored):
                view = maps.tensor(header, info)
                if view is not None:
                    set_module_tensor(model, name, view)
                    continue
            want = dtype if dtype is not None and stored.is_floating_point else stored
            target = torch.empty(tuple(info.shape), dtype=want, device=torch_device(device))
            reads.append(TensorRead(header, info, target))
            filled.append((name, target))
    # One parallel read for every CPU and GPU tensor (GPU ones through pinned double-buffered staging).
    read_tensors(reads, maps=maps if mmap else None)
    for name, target in filled:
        set_module_tensor(model, name, target)
    return index


def fill_from_state_dict(
    state: Mapping[str, torch.Tensor],
    model: torch.nn.Module,
    targets: Mapping[str, Device],
    dtypes: Mapping[str, torch.dtype],
    *,
    mmap: bool = False,
) -> None:
    """Fill the non-``"disk"`` tensors of ``targets`` from a (possibly mmap-backed) state dict.

    With ``mmap``, a ``"cpu"`` tensor that needs no cast stays as it is in ``state`` (file-backed
    when ``state`` was loaded with ``torch.load(mmap=True)``); otherwise each is a private copy.
    """
    for name, device in targets.items():
        if device == "disk":
            continue
        value = state[name].to(device=torch_device(device), dtype=dtypes.get(name), copy=not mmap)
        set_module_tensor(model, name, value)
