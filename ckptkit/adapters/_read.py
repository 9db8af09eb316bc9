"""Reading a resolved checkpoint into a meta-device module.

Stands in for ``load_sharded(ckpt, model=model, strict=False)`` and
``load_sharded(ckpt, prefix=..., dtype=...)`` (issue #3) until that verb is on main: it only walks the selected files and hands each tensor to :func:`ckptkit.io.tensors.read_tensor`
or :func:`ckptkit.io.torch_files.load_torch_file`.
"""

from __future__ import annotations

import os

import torch

from ckptkit.checkpoint import CheckpointDir
from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.safetensors_header import read_header
from ckptkit.io.tensors import read_tensor
from ckptkit.io.torch_files import load_torch_file, unwrap_state_dict

__all__ = ["assign_tensor", "read_state_dict", "read_state_into"]


def read_state_into(
    model: torch.nn.Module,
    ckpt: CheckpointDir,
    *,
    dtype: torch.dtype | None,
    device: torch.device,
    prefix: str | None = None,
) -> list[str]:
    """Assign every tensor of ``ckpt`` (under ``prefix``, stripped) to ``model``; returns the keys it has no slot for."""
    slots = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    slots |= {n for n, _ in model.named_buffers(remove_duplicate=False)}
    unexpected: list[str] = []
    for path in ckpt.weight_files:
        if ckpt.format == "safetensors":
            header = read_header(path)
            fd = os.open(path, os.O_RDONLY)
            try:
                for stored_name, info in header.tensors.items():
                    if prefix is not None and not stored_name.startswith(prefix):
                        continue
                    name = stored_name[len(prefix or "") :]
                    if name not in slots:
                        unexpected.append(name)
                        continue
                    tensor = read_tensor(fd, header, info, dtype=dtype)
                    assign_tensor(model, name, tensor.to(device), path=path)
            finally:
                os.close(fd)
        else:
            state = unwrap_state_dict(load_torch_file(path), None, path)
            for stored_name in list(state):
                tensor = state.pop(stored_name)
                if prefix is not None and not stored_name.startswith(prefix):
                    continue
                name = stored_name[len(prefix or "") :]
                if name not in slots:
                    unexpected.append(name)
                    continue
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                assign_tensor(model, name, tensor.to(device), path=path)
    return unexpected


def assign_tensor(
    model: torch.nn.Module, name: str, tensor: torch.Tensor, *, path: str | os.PathLike[str]
) -> None:
    """Put ``tensor`` in the parameter or buffer slot ``name`` of ``model``, replacing it (``assign``).

    Raises:
        CorruptCheckpointError: the shapes differ.
    """
    module_name, _, leaf = name.rpartition(".")
    module = model.get_submodule(module_name)
    old = module._parameters.get(leaf) if leaf in module._parameters else module._buffers.get(leaf)
    if old is not None and old.shape != tensor.shape:
        raise CorruptCheckpointError(
            f"tensor {name!r} has shape {tuple(tensor.shape)} but the model expects {tuple(old.shape)}",
            path=path,
            fix="check that config.json and the weights belong to the same model",
        )
    if leaf in module._parameters:
        requires_grad = old.requires_grad if old is not None else False
        module._parameters[leaf] = torch.nn.Parameter(
            tensor, requires_grad=requires_grad and tensor.is_floating_point()
        )
    else:
        module._buffers[leaf] = tensor


def read_state_dict(
    ckpt: CheckpointDir, *, prefix: str | None = None, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of ``ckpt`` (only those under ``prefix``, with it stripped), floating ones cast to ``dtype``."""
    out: dict[str, torch.Tensor] = {}
    for path in ckpt.weight_files:
        if ckpt.format == "safetensors":
            header = read_header(path)
            fd = os.open(path, os.O_RDONLY)
            try:
                for name, info in header.tensors.items():
                    if prefix is None or name.startswith(prefix):
                        out[name[len(prefix or "") :]] = read_tensor(fd, header, info, dtype=dtype)
            finally:
                os.close(fd)
            continue
        state = unwrap_state_dict(load_torch_file(path), None, path)
        for name in list(state):
            tensor = state.pop(name)
            if prefix is not None and not name.startswith(prefix):
                continue
            if dtype is not None and tensor.is_floating_point():
                tensor = tensor.to(dtype)
            out[name[len(prefix or "") :]] = tensor
    return out
