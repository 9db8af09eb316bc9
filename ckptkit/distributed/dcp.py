"""Conversions between ``torch.distributed.checkpoint`` (DCP) directories and safetensors checkpoints.

Both directions go through DCP's own API (``dcp.save``/``dcp.load`` with ``FileSystemWriter``/
``FileSystemReader`` and their planners), so whatever DCP writes or accepts stays its business; both
hold at most a bounded part of the model in memory:

- safetensors -> DCP: ``dcp.save`` plans from meta tensors and a planner whose ``resolve_data`` reads
  each tensor from the safetensors file only when DCP writes it (one file per tensor), so one tensor is
  in memory at a time. Under an initialized process group the keys are split over the ranks.
- DCP -> safetensors: a DCP directory is a source of :func:`~ckptkit.resave` (``save/sources.py``),
  written by its one writer; the tensors are loaded with ``dcp.load`` in batches of ``batch_size``
  bytes, in the order the writer needs them.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from ckptkit.distributed.load import CheckpointEntry, index_checkpoint
from ckptkit.distributed.ranks import RankGroup
from ckptkit.errors import CheckpointNotFoundError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.file_kinds import is_dcp_directory
from ckptkit.format.naming import TRANSFORMERS_WEIGHTS_NAME
from ckptkit.format.safe_files import open_regular
from ckptkit.format.sizes import parse_size
from ckptkit.io.tensors import read_tensor
from ckptkit.resolve.resolve import resolve_ckpt_dir
from ckptkit.save.resave import resave
from ckptkit.save.sources import DcpCheckpoint

__all__ = ["dcp_to_safetensors", "safetensors_to_dcp"]

logger = logging.getLogger("ckptkit")


def safetensors_to_dcp(
    src: str | os.PathLike[str] | CheckpointDir,
    dcp_dir: str | os.PathLike[str],
    *,
    variant: str | None = None,
    variant_fallback: str = "warn",
    subfolder: str | None = None,
    prefix: str | None = None,
    process_group: Any = None,
) -> Path:
    """Write a safetensors (or torch-file) checkpoint as a DCP directory, one tensor in memory at a time.

    With an initialized process group, call it on every rank: each rank reads and writes a share of
    the tensors (balanced by bytes) and DCP writes one metadata file for all. Without one it runs in
    this process alone.

    Args:
        src: anything :func:`~ckptkit.resolve_ckpt_dir` accepts.
        dcp_dir: the DCP directory to write (``dcp.load(..., checkpoint_id=dcp_dir)`` reads it).
        variant: the variant to convert (``"fp16"``); see the variant rules.
        variant_fallback: ``"warn"``, ``"allow"`` or ``"error"``.
        subfolder: a pipeline component (``"transformer"``).
        prefix: put every key under this prefix (``"model."`` for a ``{"model": state_dict}`` DCP state).
        process_group: the ranks to share the work (default: the world, when initialized).

    Returns:
        ``dcp_dir``.

    Raises:
        CheckpointNotFoundError, CorruptCheckpointError: as :func:`~ckptkit.resolve_ckpt_dir` and the
            header reader raise them.

    Example:
        >>> safetensors_to_dcp("llama/", "llama_dcp/")  # doctest: +SKIP
        >>> dcp.load(model.state_dict(), checkpoint_id="llama_dcp/")  # doctest: +SKIP
    """
    import torch.distributed.checkpoint as dcp

    group = RankGroup(process_group)
    checkpoint = resolve_ckpt_dir(
        src, subfolder=subfolder, variant=variant, variant_fallback=variant_fallback
    )
    entries = {f"{prefix or ''}{k}": e for k, e in index_checkpoint(checkpoint).items()}
    mine = _share(entries, group.rank, group.size)
    meta = {k: torch.empty(entries[k].shape, dtype=entries[k].dtype, device="meta") for k in mine}
    planner = _LazySavePlanner({k: entries[k] for k in mine})
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
            dcp.save(
                meta,
                storage_writer=dcp.FileSystemWriter(os.fspath(dcp_dir), single_file_per_rank=False),
                planner=planner,
                process_group=process_group,
                no_dist=group.dist is None,
            )
    finally:
        planner.close()
    return Path(dcp_dir)


def _share(entries: dict[str, CheckpointEntry], rank: int, size: int) -> list[str]:
    """The keys rank ``rank`` of ``size`` converts: greedy by bytes, largest first, same on every rank."""
    loads = [0] * size
    owner: dict[str, int] = {}
    for key in sorted(entries, key=lambda k: (-entries[k].nbytes, k)):
        target = loads.index(min(loads))
        owner[key] = target
        loads[target] += entries[key].nbytes
    return [k for k in entries if owner[k] == rank]


def _lazy_save_planner_class() -> type:
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
    from torch.distributed.checkpoint.planner import WriteItemType

    class LazySavePlanner(DefaultSavePlanner):
        """Plans from meta tensors; reads each tensor from its file only when DCP writes it."""

        def __init__(self, entries: dict[str, CheckpointEntry]) -> None:
            super().__init__()
            self.entries = entries
            self.fds: dict[Path, int] = {}

        def resolve_data(self, write_item: Any) -> Any:
            if write_item.type == WriteItemType.BYTE_IO:
                return super().resolve_data(write_item)
            return _read_whole(self.entries[write_item.index.fqn], self.fds)

        def close(self) -> None:
            for fd in self.fds.values():
                os.close(fd)
            self.fds.clear()

    return LazySavePlanner


def _LazySavePlanner(entries: dict[str, CheckpointEntry]) -> Any:
    return _lazy_save_planner_class()(entries)


def _read_whole(entry: CheckpointEntry, fds: dict[Path, int]) -> torch.Tensor:
    if entry.mapped is not None:
        return entry.mapped.clone()
    assert entry.header is not None and entry.info is not None
    fd = fds.get(entry.path)
    if fd is None:
        fd = fds[entry.path] = open_regular(entry.path, identity=entry.header.identity)
    return read_tensor(fd, entry.header, entry.info)


def dcp_to_safetensors(
    dcp_dir: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    max_shard_size: int | str | None = "10GB",
    weights_name: str = TRANSFORMERS_WEIGHTS_NAME,
    variant: str | None = None,
    dtype: torch.dtype | str | None = None,
    prefix: str | None = None,
    overwrite: bool = False,
    batch_size: int | str = "1GiB",
    progress: bool | None = None,
    fsync: bool = True,
) -> CheckpointDir:
    """Write the tensors of a DCP directory as a sharded safetensors checkpoint, a batch at a time.

    The DCP directory is a source of :func:`~ckptkit.resave` (the one writer: streaming, published
    atomically, ``max_shard_size``/``dtype``/``variant`` as there); this function adds the options
    only a DCP source has. The tensors are loaded with ``dcp.load`` in batches of at most
    ``batch_size`` bytes (a larger tensor alone), just ahead of the writer. Non-tensor entries
    (step counters, RNG states) are skipped with a warning. Runs in one process.

    Args:
        dcp_dir: the DCP directory (with its ``.metadata``).
        dst: the directory to create.
        max_shard_size: shard size (``"10GB"``) or ``None`` for one file.
        weights_name: ``"model"`` or ``"diffusion_pytorch_model"``.
        variant: variant in the file names; as for ``resave``, without ``dtype`` a dtype variant
            (``"fp16"``, ``"bf16"``, ``"fp32"``) also casts floating tensors to that dtype.
        dtype: cast floating tensors to this dtype.
        prefix: keep only keys under this prefix and strip it (``"model."`` for a
            ``{"model": ..., "optim": ...}`` training state).
        overwrite: replace an existing non-empty ``dst``.
        batch_size: most bytes of tensors held at once.
        progress: show a progress bar; ``None``: when stderr is a terminal.
        fsync: flush files and directories to disk before the swap.

    Returns:
        The :class:`~ckptkit.CheckpointDir` of the written checkpoint.

    Raises:
        CheckpointNotFoundError: ``dcp_dir`` holds no DCP metadata.
        CorruptCheckpointError: the metadata cannot be read, or no tensor is under ``prefix``.
        DestinationExistsError: ``dst`` exists and is not empty, and ``overwrite`` is false.

    Example:
        >>> dcp_to_safetensors("step-1000/", "export/", prefix="model.", max_shard_size="5GB")  # doctest: +SKIP
    """
    source = DcpCheckpoint(Path(os.path.abspath(os.fspath(dcp_dir))), prefix, parse_size(batch_size))
    if not is_dcp_directory(source.path):
        raise CheckpointNotFoundError(
            "no DCP .metadata file in this directory",
            path=source.path,
            fix="point at the directory dcp.save wrote (the one holding .metadata and *.distcp files)",
        )
    return resave(
        source,
        dst,
        max_shard_size=max_shard_size,
        weights_name=weights_name,
        variant=variant,
        dtype=dtype,
        overwrite=overwrite,
        copy_other_files=False,
        progress=progress,
        fsync=fsync,
    )
