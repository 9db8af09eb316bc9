"""Per-rank saving of a module whose parameters are DTensors, straight into the final shard files."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ckptkit.distributed.boxes import box_of, byte_runs, local_part, owns_unique_copy
from ckptkit.distributed.layout import ShardLayout, TensorSpec, plan_layout
from ckptkit.distributed.ranks import RankGroup
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.dtypes import DTYPES
from ckptkit.format.naming import DIFFUSERS_WEIGHTS_NAME, TRANSFORMERS_WEIGHTS_NAME
from ckptkit.io.atomic import staged_directory
from ckptkit.io.byte_copy import pwrite_all, write_all
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.resolve.resolve import resolve_local

__all__ = [
    "SaveStats",
    "dtype_code",
    "finish_staging",
    "last_save_stats",
    "save_sharded",
    "write_blank_files",
]

logger = logging.getLogger("ckptkit")

_CODES = {info.name: code for code, info in DTYPES.items()}


def dtype_code(dtype: torch.dtype) -> str:
    """The safetensors code of a torch dtype (``torch.bfloat16`` -> ``"BF16"``)."""
    name = str(dtype).removeprefix("torch.")
    if name not in _CODES:
        raise ValueError(f"safetensors has no dtype code for {dtype}")
    return _CODES[name]


@dataclass
class SaveStats:
    """What this rank wrote in a :func:`save_sharded` call (pass one as ``stats=``)."""

    bytes_written: int = 0
    tensors_written: int = 0


_last_stats = SaveStats()


def last_save_stats() -> SaveStats:
    """Bytes and tensors this rank wrote in its last :func:`save_sharded` call.

    Deprecated: pass ``stats=SaveStats()`` to :func:`save_sharded` instead (module-global state is
    wrong with two saves in flight); removed in the next release.
    """
    warnings.warn(
        "last_save_stats() is deprecated; pass stats=SaveStats() to save_sharded",
        DeprecationWarning,
        stacklevel=2,
    )
    return _last_stats


def save_sharded(
    model: torch.nn.Module,
    dst: str | os.PathLike[str],
    *,
    max_shard_size: int | str | None = "10GB",
    variant: str | None = None,
    weights_name: str | None = None,
    dtype: torch.dtype | str | None = None,
    overwrite: bool = False,
    save_config: bool = True,
    process_group: Any = None,
    stats: SaveStats | None = None,
) -> CheckpointDir:
    """Save a module whose parameters are DTensors as an ordinary sharded safetensors checkpoint.

    Call it on every rank of ``process_group``. The layout and every header are computed from shapes
    and dtypes alone, identically on all ranks; rank 0 creates the files at their final sizes with
    their headers in a temporary directory next to ``dst``; then every rank ``pwrite``\\ s the boxes of
    its local shards straight to their final offsets (each replicated box is written by one rank).
    After a barrier, rank 0 writes the index and the model's config and publishes the directory
    with :func:`ckptkit.io.atomic.staged_directory` (locked, crash-recovered, one rename). Nothing is gathered; no rank holds more than its own shards. The result loads with
    transformers/diffusers ``from_pretrained`` and safetensors ``load_file``. Without an initialized
    process group it saves a plain module in one process. ``dst`` must be on a file system every rank
    sees (one host, or a shared mount).

    Args:
        model: the module (FSDP2 ``fully_shard``, ``distribute_tensor`` parameters, or plain tensors).
        dst: the directory to create.
        max_shard_size: shard size (``"10GB"``, ``"500MiB"``, bytes) or ``None`` for one file.
        variant: variant in the file names (``"fp16"``).
        weights_name: ``"model"`` or ``"diffusion_pytorch_model"``; taken from the model's library when
            ``None``.
        dtype: cast floating tensors to this dtype on the way out.
        overwrite: replace an existing non-empty ``dst``.
        save_config: also write the model's ``config.json`` (transformers ``config``, diffusers
            ``save_config``), as ``save_pretrained`` does.
        process_group: the group of ranks that hold the model (default: the world).
        stats: filled with the bytes and tensors this rank wrote.

    Returns:
        The :class:`~ckptkit.CheckpointDir` of the written checkpoint.

    Raises:
        DestinationExistsError: ``dst`` exists and is not empty, and ``overwrite`` is false.
        DiskFullError: the disk ran out; nothing is left at ``dst``, an old ``dst`` is intact.
        CkptError: a rank failed to write; nothing is left at ``dst`` (the error says which rank).
        ValueError: a placement that is no box (``Partial``), or a dtype safetensors cannot store.

    Example:
        >>> fully_shard(model)  # doctest: +SKIP
        >>> save_sharded(model, "out/", max_shard_size="5GB")  # doctest: +SKIP
        CheckpointDir(path=PosixPath('out'), weight_files=[...], format='safetensors', ...)
    """
    global _last_stats
    group = RankGroup(process_group)
    dst = Path(os.path.abspath(os.fspath(dst)))
    name = weights_name or _weights_name_of(model)
    tensors = _unique_tensors(model)
    cast = to_torch_dtype(dtype) if dtype is not None else None
    out_dtypes = {
        k: cast if cast is not None and t.is_floating_point() else t.dtype for k, t in tensors.items()
    }
    layout = plan_layout(
        [TensorSpec(k, dtype_code(out_dtypes[k]), tuple(t.shape)) for k, t in tensors.items()],
        weights_name=name,
        max_shard_size=max_shard_size,
        variant=variant,
    )

    stats = stats if stats is not None else SaveStats()
    # Rank 0 stages the directory through the one publish path (lock, crash recovery, typed
    # errors); every rank writes into it; rank 0 publishes it once all ranks are done.
    with contextlib.ExitStack() as publish:

        def prepare() -> str:
            staging = publish.enter_context(staged_directory(dst, overwrite=overwrite))
            write_blank_files(staging.path, layout)
            return os.fspath(staging.path)

        staged = Path(group.broadcast(group.agree(prepare if group.rank == 0 else lambda: None)))
        group.agree(lambda: _write_local(model, tensors, out_dtypes, layout, staged, group.rank, stats))
        _last_stats = stats

        def finish() -> None:
            finish_staging(staged, layout, model if save_config else None)
            publish.close()

        group.agree(finish if group.rank == 0 else lambda: None)
    return resolve_local(dst, variant=variant, variant_fallback="allow", weights_name=name)


def _weights_name_of(model: torch.nn.Module) -> str:
    is_diffusers = hasattr(model, "save_config") and hasattr(type(model), "config_name")
    return DIFFUSERS_WEIGHTS_NAME if is_diffusers else TRANSFORMERS_WEIGHTS_NAME


def _unique_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State-dict tensors with tied copies dropped (the first name of each is kept, as transformers does)."""
    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if isinstance(value, torch.Tensor) and id(value) not in seen:
            seen.add(id(value))
            out[key] = value
    return out


def finish_staging(directory: Path, layout: ShardLayout, model: torch.nn.Module | None) -> None:
    """Write the index of ``layout`` (and ``model``'s config files, when given) into ``directory``."""
    if layout.index_name is not None:
        fd = os.open(directory / layout.index_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(fd, layout.index_bytes())
            os.fsync(fd)
        finally:
            os.close(fd)
    if model is not None:
        _write_config(model, directory)


def write_blank_files(directory: Path, layout: ShardLayout) -> None:
    """Create every file of ``layout`` at its final size, with its header written and data zero."""
    for shard in layout.files:
        fd = os.open(directory / shard.filename, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, shard.file_size)
            pwrite_all(fd, memoryview(shard.header), 0)
        finally:
            os.close(fd)


def _write_local(
    model: torch.nn.Module,
    tensors: dict[str, torch.Tensor],
    out_dtypes: dict[str, torch.dtype],
    layout: ShardLayout,
    directory: Path,
    rank: int,
    stats: SaveStats,
) -> None:
    fds: dict[str, int] = {}
    try:
        with torch.no_grad():
            for key, tensor in tensors.items():
                if not owns_unique_copy(tensor, rank):
                    continue
                box = box_of(tensor)
                if box.numel == 0:
                    continue
                shard = layout.location[key]
                fd = fds.get(shard.filename)
                if fd is None:
                    fd = fds[shard.filename] = os.open(directory / shard.filename, os.O_WRONLY)
                data = local_part(tensor).detach().to("cpu", out_dtypes[key]).contiguous()
                raw = memoryview(data.reshape(-1).view(torch.uint8).numpy()).cast("B")  # type: ignore[arg-type]
                base = shard.file_offset(key)
                for run in byte_runs(box, data.element_size()):
                    pwrite_all(fd, raw[run.target : run.target + run.nbytes], base + run.source)
                    stats.bytes_written += run.nbytes
                stats.tensors_written += 1
        for fd in fds.values():
            os.fsync(fd)
    finally:
        for fd in fds.values():
            os.close(fd)


def _write_config(model: torch.nn.Module, directory: Path) -> None:
    """The config files ``save_pretrained`` writes next to the weights, for the model's library."""
    if hasattr(model, "save_config") and hasattr(type(model), "config_name"):
        save_config: Any = model.save_config  # diffusers ConfigMixin
        save_config(directory)
        return
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "save_pretrained"):
        return
    config = copy.deepcopy(config)
    config.architectures = [_original_class(model).__name__]
    config.save_pretrained(directory)
    generation = getattr(model, "generation_config", None)
    if generation is not None and hasattr(generation, "save_pretrained"):
        generation.save_pretrained(directory)


def _original_class(model: torch.nn.Module) -> type:
    """The model's own class: FSDP2 swaps in a subclass named ``FSDP<Name>``."""
    from torch.distributed.fsdp import FSDPModule

    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))
