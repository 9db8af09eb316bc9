"""Zero-copy tensors: copy-on-write maps of safetensors files and views into them.

:class:`FileMaps` keeps one ``MAP_PRIVATE`` map per file, made on first use, and hands out each
tensor as a view into it. Nothing is read until a page is touched, the pages are page cache
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
    """Copy-on-write maps of safetensors files (one per file, made on first use) and views into them.

    Example:
        >>> maps = FileMaps()  # doctest: +SKIP
        >>> header = read_header("model.safetensors")  # doctest: +SKIP
        >>> weight = maps.tensor(header, header.tensors["weight"])  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self._storages: dict[Path, torch.UntypedStorage] = {}
        self._last_header: SafetensorsHeader | None = None
        self._last_storage: torch.UntypedStorage | None = None
        # The last file's map viewed as each dtype met in it (a whole-map view, made once).
        self._typed: dict[torch.dtype, torch.Tensor] = {}

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
            storage = self._storages.get(header.path)
            self._last_storage = storage if storage is not None else self._map(header)
            self._typed = {}
        typed = self._typed.get(dtype)
        if typed is None:
            storage = self._last_storage
            assert storage is not None
            # The whole map as elements of ``dtype``, in one call (fewer distinct torch calls: a
            # fresh process pays a one-time cost for each).
            typed = torch.empty(0, dtype=dtype).set_(storage, 0, (storage.nbytes() // size,), (1,))  # type: ignore[call-overload]  # the stub lacks UntypedStorage
            self._typed[dtype] = typed
        # One strided view of the typed map per tensor (cheaper than slicing then viewing twice).
        shape = info.shape
        strides = _STRIDES.get(shape)
        if strides is None:
            strides = _contiguous_strides(shape)
            if len(_STRIDES) < 4096:  # layers repeat a few shapes; a header of unique ones stays bounded
                _STRIDES[shape] = strides
        return typed.as_strided(shape, strides, start // size)

    def _map(self, header: SafetensorsHeader) -> torch.UntypedStorage:
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
            storage = torch.UntypedStorage.from_file(held_path(fd, path), False, size)
        finally:
            os.close(fd)
        self._storages[path] = storage  # type: ignore[assignment]  # from_file's stub says _StorageBase
        return storage  # type: ignore[return-value]


#: Contiguous strides by shape, as computed by :func:`_contiguous_strides`.
_STRIDES: dict[tuple[int, ...], tuple[int, ...]] = {}


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides = []
    step = 1
    for dim in reversed(shape):
        strides.append(step)
        step *= max(dim, 1)
    return tuple(reversed(strides))
