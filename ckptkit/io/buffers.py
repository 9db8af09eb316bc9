"""Raw views of tensor memory, for reading file bytes straight into a tensor."""

from __future__ import annotations

import ctypes

import torch

__all__ = ["raw_bytes"]


def raw_bytes(tensor: torch.Tensor) -> memoryview:
    """A writable byte view of a contiguous CPU tensor's memory, whatever its dtype.

    numpy has no bfloat16 or float8, so the view is made from the data pointer; the caller keeps
    ``tensor`` alive while the view is used.

    Example:
        >>> t = torch.zeros(2, dtype=torch.bfloat16)
        >>> view = raw_bytes(t)
        >>> view[:2] = b"\\x80\\x3f"
        >>> t[0].item()
        1.0
    """
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        raise ValueError("raw_bytes needs a contiguous CPU tensor")
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes == 0:
        return memoryview(bytearray(0))
    return memoryview((ctypes.c_char * nbytes).from_address(tensor.data_ptr())).cast("B")
