"""Reading safetensors tensors into private (not file-backed) torch tensors."""

from __future__ import annotations

import os

import torch

from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.dtypes import DTYPES, canonical_dtype
from ckptkit.format.safetensors_header import SafetensorsHeader, TensorInfo
from ckptkit.io.buffers import raw_bytes

__all__ = ["read_into", "read_tensor", "to_torch_dtype"]


def to_torch_dtype(value: object) -> torch.dtype:
    """A ``torch.dtype`` from a torch dtype, a user string (``"bf16"``) or a safetensors code (``"BF16"``).

    Example:
        >>> to_torch_dtype("fp16"), to_torch_dtype("BF16")
        (torch.float16, torch.bfloat16)
    """
    if type(value) is str:  # the hot path: one dict lookup per tensor of a header
        known = _BY_NAME.get(value)
        if known is not None:
            return known
    if isinstance(value, torch.dtype):
        return value
    text = str(value)
    name = DTYPES[text].name if text in DTYPES else canonical_dtype(text)
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"this torch ({torch.__version__}) has no dtype {name!r}")
    if isinstance(value, str) and len(_BY_NAME) < 256:
        _BY_NAME[value] = dtype
    return dtype


#: Names already converted by :func:`to_torch_dtype` (safetensors codes and user strings).
_BY_NAME: dict[str, torch.dtype] = {}


def read_into(fd: int, offset: int, target: memoryview, path: str | os.PathLike[str]) -> None:
    """Fill ``target`` from ``fd`` at ``offset`` with ``os.preadv``, looping over short reads."""
    done, total = 0, len(target)
    while done < total:
        count = os.preadv(fd, [target[done:]], offset + done)
        if count == 0:
            raise CorruptCheckpointError(
                f"file ended {total - done} bytes early while reading a tensor",
                path=path,
                fix="the file is truncated; download or copy it again",
            )
        done += count


def read_tensor(
    fd: int,
    header: SafetensorsHeader,
    info: TensorInfo,
    *,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Read one tensor into fresh private CPU memory, cast to ``dtype`` when given.

    Args:
        fd: an open file descriptor of ``header.path``.
        header: the file's parsed header.
        info: the tensor's entry in it.
        dtype: cast to this dtype (floating tensors only; integer and bool tensors are kept).
    """
    stored = to_torch_dtype(info.dtype)
    out = torch.empty(info.shape, dtype=stored)
    if info.nbytes:
        read_into(fd, header.data_start + info.begin, raw_bytes(out), header.path)
    if dtype is not None and dtype != stored and stored.is_floating_point:
        out = out.to(dtype)
    return out
