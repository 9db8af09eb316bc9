"""Which bytes of a row-major tensor a rank owns: boxes of a global tensor and their contiguous runs.

A ``DTensor`` whose placements are ``Shard(d)`` and ``Replicate()`` holds, on each rank, one box of the
global tensor: a start index and a size along every dimension. In a row-major (C-order) tensor such a
box is a set of contiguous byte runs: one run when only the first dimension is cut (``Shard(0)``), one
run per row of the leading dimensions otherwise. Runs come in the order of the local tensor's own
row-major bytes, so the n-th run fills the next ``run_bytes`` of the local buffer.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

__all__ = ["Box", "ByteRun", "box_of", "byte_runs", "local_part", "owns_unique_copy"]


@dataclass(frozen=True)
class Box:
    """A rectangular part of a global tensor.

    Attributes:
        global_shape: the shape of the whole tensor.
        offsets: the first index of the part along every dimension.
        sizes: the length of the part along every dimension.
    """

    global_shape: tuple[int, ...]
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def numel(self) -> int:
        return math.prod(self.sizes)


@dataclass(frozen=True)
class ByteRun:
    """One contiguous stretch of a box: ``nbytes`` at ``source`` in the tensor, at ``target`` in the box."""

    source: int
    target: int
    nbytes: int


def byte_runs(box: Box, itemsize: int) -> Iterator[ByteRun]:
    """The contiguous byte runs of ``box`` in a row-major tensor of ``itemsize``-byte elements.

    Offsets are relative to the tensor's first byte (``source``) and to the box's first byte
    (``target``). Neighbouring runs are merged, so a box cut only along its first dimension is one run.

    Example:
        >>> list(byte_runs(Box((4, 3), (2, 0), (2, 3)), 2))
        [ByteRun(source=12, target=0, nbytes=12)]
        >>> list(byte_runs(Box((2, 4), (0, 1), (2, 2)), 1))
        [ByteRun(source=1, target=0, nbytes=2), ByteRun(source=5, target=2, nbytes=2)]
    """
    if box.numel == 0:
        return
    shape, offsets, sizes = box.global_shape, box.offsets, box.sizes
    ndim = len(shape)
    # `cut` is the last dimension the box does not span whole; everything after it is one block.
    cut = 0
    for dim in range(ndim - 1, -1, -1):
        if sizes[dim] != shape[dim]:
            cut = dim
            break
    strides = [math.prod(shape[dim + 1 :]) for dim in range(ndim)]
    run_elems = sizes[cut] * strides[cut] if ndim else 1
    target = 0
    for index in itertools.product(*(range(offsets[d], offsets[d] + sizes[d]) for d in range(cut))):
        start = sum(i * strides[d] for d, i in enumerate(index)) + (
            offsets[cut] * strides[cut] if ndim else 0
        )
        yield ByteRun(start * itemsize, target, run_elems * itemsize)
        target += run_elems * itemsize


def box_of(tensor: torch.Tensor) -> Box:
    """The box of the global tensor that this rank's local part of ``tensor`` covers.

    A plain tensor covers itself whole. A ``DTensor`` may use ``Shard(dim)`` and ``Replicate()``
    placements on any mesh dimensions (FSDP2, ``distribute_tensor``).

    Raises:
        ValueError: for a placement that is no box (``Partial``, ``_StridedShard`` of FSDP2+TP on the
            same dimension); redistribute such tensors to ``Shard``/``Replicate`` first.
    """
    from torch.distributed.tensor import DTensor

    if not isinstance(tensor, DTensor):
        shape = tuple(tensor.shape)
        return Box(shape, (0,) * len(shape), shape)
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    _check_placements(tensor)
    shape = tuple(tensor.shape)
    sizes, offsets = compute_local_shape_and_global_offset(shape, tensor.device_mesh, tensor.placements)
    local_shape = tuple(tensor.to_local().shape)
    if tuple(sizes) != local_shape:
        raise ValueError(
            f"the local part of a DTensor has shape {local_shape}, but its placements "
            f"{tensor.placements} give {tuple(sizes)}; only evenly chunked Shard/Replicate layouts are supported"
        )
    return Box(shape, tuple(offsets), tuple(sizes))


def _check_placements(tensor: torch.Tensor) -> None:
    for placement in tensor.placements:  # type: ignore[attr-defined]
        if type(placement).__name__ not in ("Shard", "Replicate"):
            raise ValueError(
                f"placement {placement} is not supported (only Shard(dim) and Replicate()); "
                "redistribute the tensor to Shard/Replicate placements first"
            )


def owns_unique_copy(tensor: torch.Tensor, rank: int) -> bool:
    """Whether this rank is the one that writes its box of ``tensor`` (one writer per box).

    A plain tensor is written by global rank 0. A ``DTensor`` box is written by the rank at
    coordinate 0 along every mesh dimension that replicates it.
    """
    from torch.distributed.tensor import DTensor

    if not isinstance(tensor, DTensor):
        return rank == 0
    _check_placements(tensor)
    coordinate = tensor.device_mesh.get_coordinate()
    if coordinate is None:  # this rank is not in the tensor's mesh
        return False
    return all(
        coordinate[dim] == 0
        for dim, placement in enumerate(tensor.placements)
        if type(placement).__name__ == "Replicate"
    )


def local_part(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor this rank holds: ``to_local()`` of a ``DTensor``, the tensor itself otherwise."""
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor
