"""Per-rank loading into a module whose parameters are DTensors: each rank reads only its own bytes."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ckptkit.distributed.allocate import allocate_meta_model
from ckptkit.distributed.boxes import Box, box_of, byte_runs, local_part
from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.safe_files import open_regular
from ckptkit.format.safetensors_header import SafetensorsHeader, TensorInfo, read_header
from ckptkit.io.module_fill import FillPlan, ModuleSlots, StoredTensor, plan_module_fill
from ckptkit.io.tensors import read_into, to_torch_dtype
from ckptkit.io.torch_files import load_torch_file, unwrap_state_dict
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = ["DistributedLoadResult", "has_dtensor_params", "load_sharded_distributed"]

logger = logging.getLogger("ckptkit")


@dataclass
class DistributedLoadResult:
    """What :func:`load_sharded_distributed` did on this rank.

    Attributes:
        missing_keys: model keys the checkpoint does not hold (tied copies of a loaded key excluded).
        unexpected_keys: checkpoint keys the model does not have.
        bytes_read: bytes of tensor data this rank read from the checkpoint files.
        bytes_total: bytes of tensor data in the checkpoint (every rank would read this without sharding).
        checkpoint: the resolved checkpoint.
        allocated_on: where the local shards of a model built on ``meta`` were allocated
            (``None``: the model was already allocated).
        recomputed_buffers: non-persistent buffers (in no checkpoint) recomputed as the model's
            own init does, after allocating a ``meta`` model.
        uninitialized_buffers: non-persistent buffers that could not be recomputed (a warning
            names them too): they hold uninitialised memory.
    """

    missing_keys: list[str] = field(default_factory=list)
    unexpected_keys: list[str] = field(default_factory=list)
    bytes_read: int = 0
    bytes_total: int = 0
    checkpoint: CheckpointDir | None = field(default=None, repr=False)
    allocated_on: torch.device | None = None
    recomputed_buffers: list[str] = field(default_factory=list)
    uninitialized_buffers: list[str] = field(default_factory=list)


def has_dtensor_params(model: torch.nn.Module) -> bool:
    """Whether any parameter or buffer of ``model`` is a ``DTensor`` (FSDP2, ``distribute_tensor``).

    Example:
        >>> has_dtensor_params(torch.nn.Linear(2, 2))
        False
    """
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(t, DTensor) for t in _model_tensors(model).values())


@dataclass
class CheckpointEntry:
    """Where one checkpoint tensor lies: a safetensors header entry, or a mapped torch tensor."""

    path: Path
    info: TensorInfo | None = None
    header: SafetensorsHeader | None = None
    mapped: torch.Tensor | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.info.shape if self.info is not None else tuple(self.mapped.shape)  # type: ignore[union-attr]

    @property
    def dtype(self) -> torch.dtype:
        return to_torch_dtype(self.info.dtype) if self.info is not None else self.mapped.dtype  # type: ignore[union-attr]

    @property
    def nbytes(self) -> int:
        if self.info is not None:
            return self.info.nbytes
        return self.mapped.numel() * self.mapped.element_size()  # type: ignore[union-attr]


def load_sharded_distributed(
    ckpt: str | os.PathLike[str] | CheckpointDir,
    model: torch.nn.Module,
    *,
    strict: bool = True,
    dtype: torch.dtype | str | None = None,
    variant: str | None = None,
    variant_fallback: str = "warn",
    subfolder: str | None = None,
    prefix: str | None = None,
    strip_prefixes: Sequence[str] | str | None = None,
    keep_in_fp32_modules: Sequence[str] | None = None,
    device: str | torch.device | None = None,
) -> DistributedLoadResult:
    """Fill a module whose parameters are DTensors, each rank reading only the bytes of its local shards.

    For every parameter and buffer, the rank computes the box of the global tensor its local shard
    covers (``Shard(dim)``/``Replicate()`` placements on any mesh) and reads exactly those bytes from
    the safetensors file with ``preadv``: one range for a ``Shard(0)`` shard of a row-major tensor, one
    per row of the leading dimensions otherwise. Replicated and plain tensors are read whole by every
    rank (on one host, a read from the page cache is cheaper than a broadcast). Nothing is gathered and
    no rank builds a tensor it does not own. Torch files (``.bin``/``.pt``) are mapped, and only the
    pages of each rank's boxes are touched. Needs no process group: it only reads.

    Args:
        ckpt: anything :func:`~ckptkit.resolve_ckpt_dir` accepts, or a :class:`~ckptkit.CheckpointDir`.
        model: the module (FSDP2 ``fully_shard`` or ``distribute_tensor`` parameters; plain tensors too).
            A model built on the meta device is allocated first, each rank its own shards only (see
            :func:`~ckptkit.distributed.allocate.allocate_meta_model`), and its non-persistent
            buffers are recomputed as its own init does (or named in the result, with a warning).
        strict: raise when keys are missing or unexpected (before anything is read).
        dtype: cast floating tensors to this dtype, as :func:`~ckptkit.load_sharded` does: a
            parameter of another dtype is replaced by a DTensor of this dtype on the same mesh and
            placements (before FSDP2's first forward, as ``load_state_dict(assign=True)``).
            ``None``: each parameter keeps its own dtype (values are cast to it).
        variant: the variant to load (``"fp16"``); see the variant rules.
        variant_fallback: ``"warn"``, ``"allow"`` or ``"error"``.
        subfolder: a pipeline component (``"transformer"``).
        prefix: keep only checkpoint keys under this prefix, and strip it.
        strip_prefixes: wrapper prefixes to remove from checkpoint keys (``"module."``, ``"_orig_mod."``),
            nested ones too; two keys that become one raise :class:`~ckptkit.AmbiguousCheckpointError`.
        keep_in_fp32_modules: modules that stay float32 under ``dtype``; default: the model's
            ``_keep_in_fp32_modules``.
        device: where to allocate a meta-device model's shards; default: the device type of its
            DTensors' mesh (the current CUDA device for ``cuda``), else CPU.

    Returns:
        A :class:`DistributedLoadResult` with the keys and this rank's byte count.

    Raises:
        ModelMismatchError: a shape differs from the model's, or (with ``strict``) keys are missing
            or unexpected; raised before anything is read, as by every loading path.
        CorruptCheckpointError: a key is in two files.
        ValueError: a placement that is no box (``Partial``), a model partly on ``meta`` (allocation
            would discard values), or a device that cannot be allocated on.

    Example:
        >>> fully_shard(model)  # doctest: +SKIP
        >>> result = load_sharded_distributed("ckpt/", model)  # doctest: +SKIP
        >>> result.bytes_read / result.bytes_total  # about 1 / world size  # doctest: +SKIP
        0.5
    """
    checkpoint = resolve_ckpt_dir(
        ckpt, subfolder=subfolder, variant=variant, variant_fallback=variant_fallback
    ).require_single()
    entries = index_checkpoint(checkpoint)
    allocation = allocate_meta_model(model, device=device)
    cast = dtype if dtype is not None else (checkpoint.selection.cast_dtype if checkpoint.selection else None)
    plan = plan_module_fill(
        ModuleSlots(model, tie=False),
        [StoredTensor(key, entry.shape, entry.dtype) for key, entry in entries.items()],
        prefix=prefix,
        strip_prefixes=strip_prefixes,
        dtype=to_torch_dtype(cast) if cast is not None else None,
        keep_in_fp32=keep_in_fp32_modules,
        strict=strict,
        where=checkpoint.path,
    )
    for name in plan.fills:
        if local_part(plan.slots.current(name)).is_meta:
            raise ValueError(
                f"{name!r} lives on the meta device; allocate the local shards first with "
                "model.to_empty(device=...) after fully_shard"
            )
    result = DistributedLoadResult(
        missing_keys=list(plan.missing_keys),
        unexpected_keys=list(plan.unexpected_keys),
        bytes_total=sum(entries[source].nbytes for source in plan.selection.values()),
        checkpoint=checkpoint,
    )
    if allocation is not None:
        result.allocated_on = allocation.device
        result.recomputed_buffers = allocation.recomputed
        result.uninitialized_buffers = allocation.uninitialized
    fds: dict[Path, int] = {}
    try:
        with torch.no_grad():
            for name, stored in plan.fills.items():
                result.bytes_read += _fill_key(plan, name, entries[stored.key], fds)
    finally:
        for fd in fds.values():
            os.close(fd)
    return result


def _fill_key(plan: FillPlan, name: str, entry: CheckpointEntry, fds: dict[Path, int]) -> int:
    """Fill ``name``'s local part from ``entry``, in the dtype the plan casts it to; returns bytes read."""
    tensor = plan.slots.current(name)
    box = box_of(tensor)
    cast = plan.cast(name, entry.dtype)
    if cast is None or cast == tensor.dtype:
        read = _fill(local_part(tensor), entry, box, fds)
    else:
        # Another dtype is another tensor: a new local shard, wrapped as the old one was (FSDP2
        # takes a swapped parameter before its first forward, as after load_state_dict(assign=True)).
        local = torch.empty_like(local_part(tensor), dtype=cast)
        read = _fill(local, entry, box, fds)
        plan.slots.assign(name, _like(tensor, local))
    logger.debug("loaded %s %s of %s", name, box.sizes, box.global_shape)
    return read


def _like(tensor: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """``local`` placed as ``tensor`` is: a DTensor on the same mesh, or ``local`` itself."""
    from torch.distributed.tensor import DTensor

    if not isinstance(tensor, DTensor):
        return local
    return DTensor.from_local(
        local,
        tensor.device_mesh,
        tensor.placements,
        run_check=False,
        shape=tensor.shape,
        stride=tensor.stride(),
    )


def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict(keep_vars=True).items() if isinstance(v, torch.Tensor)}


def index_checkpoint(checkpoint: CheckpointDir) -> dict[str, CheckpointEntry]:
    """Every tensor of ``checkpoint`` by its stored key: header entries, or mapped torch tensors.

    Raises:
        CorruptCheckpointError: a key is in two files.
    """
    entries: dict[str, CheckpointEntry] = {}
    for path in checkpoint.weight_files:
        if checkpoint.format == "safetensors":
            header = read_header(path)
            found = {k: CheckpointEntry(path, info=info, header=header) for k, info in header.tensors.items()}
        else:
            tensors = unwrap_state_dict(load_torch_file(path, mmap=True), None, path)
            found = {k: CheckpointEntry(path, mapped=t) for k, t in tensors.items()}
        for key, entry in found.items():
            if key in entries:
                raise CorruptCheckpointError(
                    f"tensor {key!r} is in both {entries[key].path.name} and {path.name}",
                    path=path,
                    fix="the shards overlap; rewrite the checkpoint so each tensor is in one file",
                )
            entries[key] = entry
    return entries


def _fill(local: torch.Tensor, entry: CheckpointEntry, box: Box, fds: dict[Path, int]) -> int:
    """Read ``box`` of ``entry`` into ``local``; returns the bytes read."""
    if box.numel == 0:
        return 0
    if entry.mapped is not None:
        part = entry.mapped[tuple(slice(o, o + s) for o, s in zip(box.offsets, box.sizes, strict=True))]
        local.copy_(part.reshape(local.shape))
        return part.numel() * part.element_size()
    assert entry.info is not None and entry.header is not None
    stored = to_torch_dtype(entry.info.dtype)
    direct = local.device.type == "cpu" and local.dtype == stored and local.is_contiguous()
    buffer = local if direct else torch.empty(box.sizes, dtype=stored)
    raw = memoryview(buffer.reshape(-1).view(torch.uint8).numpy()).cast("B")  # type: ignore[arg-type]
    fd = fds.get(entry.path)
    if fd is None:
        fd = fds[entry.path] = open_regular(entry.path, identity=entry.header.identity)
    base = entry.header.data_start + entry.info.begin
    total = 0
    for run in byte_runs(box, buffer.element_size()):
        read_into(fd, base + run.source, raw[run.target : run.target + run.nbytes], entry.path)
        total += run.nbytes
    if not direct:
        local.copy_(buffer.reshape(local.shape))
    return total
