"""Zero-copy tensors: copy-on-write maps of safetensors files and views into them.

:class:`FileMaps` keeps one ``MAP_PRIVATE`` map per file (and dtype: a file of two dtypes is mapped
twice, which costs address space, not memory), made on first use, and hands out each tensor as a view
into it. Nothing is read until a page is touched, the pages are page cache
(reclaimable, shared with other processes that read the file), and writing to such a tensor copies
the page privately: the file is never changed. The reader also casts from these maps (each byte of
the file read once, straight into its destination).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.safe_files import held_path, open_regular
from ckptkit.format.safetensors_header import SafetensorsHeader, TensorInfo
from ckptkit.io.tensors import to_torch_dtype

__all__ = ["FileMaps"]


class FileMaps:
    """Copy-on-write maps of safetensors files (one per file and dtype, made on first use) and views
    into them.

    Example:
        >>> maps = FileMaps()  # doctest: +SKIP
        >>> header = read_header("model.safetensors")  # doctest: +SKIP
        >>> weight = maps.tensor(header, header.tensors["weight"])  # doctest: +SKIP
    """

    def __init__(self) -> None:
        # path -> dtype -> the whole file mapped as elements of that dtype.
        self._maps: dict[Path, dict[torch.dtype, torch.Tensor]] = {}
        self._last_header: SafetensorsHeader | None = None
        self._last_maps: dict[torch.dtype, torch.Tensor] = {}

    def tensor(
        self, header: SafetensorsHeader, info: TensorInfo, dtype: torch.dtype | None = None
    ) -> torch.Tensor | None:
        """A file-backed tensor of ``info`` in its stored dtype and shape, or ``None`` when it
        cannot be one (no bytes, or an offset not aligned for its dtype): read it instead."""
        if dtype is None:
            dtype = to_torch_dtype(info.dtype)
        size = dtype.itemsize
        start = header.data_start + info.begin
        nbytes = info.end - info.begin
        if not nbytes or start % size or nbytes % size or size * math.prod(info.shape) != nbytes:
            return None
        if header is not self._last_header:  # tensors come file by file: skip hashing the path
            self._last_header = header
            self._last_maps = self._maps.setdefault(header.path, {})
        typed = self._last_maps.get(dtype)
        if typed is None:
            typed = self._last_maps[dtype] = self._map(header, dtype)
        # One strided view of the typed map per tensor (cheaper than slicing then viewing twice).
        shape = info.shape
        strides = _STRIDES.get(shape)
        if strides is None:
            strides = _contiguous_strides(shape)
            if len(_STRIDES) < 4096:  # layers repeat a few shapes; a header of unique ones stays bounded
                _STRIDES[shape] = strides
        return typed.as_strided(shape, strides, start // size)

    def _map(self, header: SafetensorsHeader, dtype: torch.dtype) -> torch.Tensor:
        path = header.path
        # Map the file already opened and checked (regular, the one whose header was read), not the
        # path again. shared=False: MAP_PRIVATE, so writes to a tensor copy the page and never reach
        # the file.
        fd = open_regular(path, identity=header.identity)
        try:
            size = os.fstat(fd).st_size
            # The header was checked against the size the file had then: its tensors end there.
            end = header.file_size
            if size < end:
                # Truncated after its header was checked: reading past the end of a map would fault.
                raise CorruptCheckpointError(
                    f"file is {size} bytes but its header describes {end}",
                    path=path,
                    fix="the file is truncated; download or copy it again",
                )
            # The whole file as elements of ``dtype``, in one torch call (a storage, then a typed
            # tensor set on it, costs a fresh process two more first calls: about 0.2 ms). A tail
            # shorter than one element is left out; an aligned tensor of this dtype never ends there.
            return torch.from_file(
                held_path(fd, path), shared=False, size=size // dtype.itemsize, dtype=dtype
            )
        finally:
            os.close(fd)


#: Contiguous strides by shape, as computed by :func:`_contiguous_strides`.
_STRIDES: dict[tuple[int, ...], tuple[int, ...]] = {}


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides = []
    step = 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))
