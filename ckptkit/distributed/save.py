"""Per-rank saving of a module whose parameters are DTensors, straight into the final shard files."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ckptkit.distributed.boxes import box_of, byte_runs, local_part, owns_unique_copy
from ckptkit.distributed.layout import ShardLayout, TensorSpec, plan_layout
from ckptkit.errors import CkptError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.dtypes import DTYPES
from ckptkit.format.naming import DIFFUSERS_WEIGHTS_NAME, TRANSFORMERS_WEIGHTS_NAME
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.resolve.resolve import resolve_local

__all__ = ["SaveStats", "dtype_code", "last_save_stats", "save_sharded", "write_blank_files"]

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
    """What this rank wrote in its last :func:`save_sharded` call (see :func:`last_save_stats`)."""

    bytes_written: int = 0
    tensors_written: int = 0


_last_stats = SaveStats()


def last_save_stats() -> SaveStats:
    """Bytes and tensors this rank wrote in its last :func:`save_sharded` call."""
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
) -> CheckpointDir:
    """Save a module whose parameters are DTensors as an ordinary sharded safetensors checkpoint.

    Call it on every rank of ``process_group``. The layout and every header are computed from shapes
    and dtypes alone, identically on all ranks; rank 0 creates the files at their final sizes with
    their headers in a temporary directory next to ``dst``; then every rank ``pwrite``\\ s the boxes of
    its local shards straight to their final offsets (each replicated box is written by one rank).
    After a barrier, rank 0 writes the index and the model's config and renames the directory into
    place. Nothing is gathered; no rank holds more than its own shards. The result loads with
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

    Returns:
        The :class:`~ckptkit.CheckpointDir` of the written checkpoint.

    Raises:
        FileExistsError: ``dst`` exists and is not empty, and ``overwrite`` is false.
        CkptError: a rank failed to write; nothing is left at ``dst`` (the error says which rank).
        ValueError: a placement that is no box (``Partial``), or a dtype safetensors cannot store.

    Example:
        >>> fully_shard(model)  # doctest: +SKIP
        >>> save_sharded(model, "out/", max_shard_size="5GB")  # doctest: +SKIP
        CheckpointDir(path=PosixPath('out'), weight_files=[...], format='safetensors', ...)
    """
    global _last_stats
    group = _Group(process_group)
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

    tmp: Path | None = None
    if group.rank == 0:
        tmp = group.run_first(lambda: _prepare(dst, layout, overwrite))
    else:
        group.run_first(lambda: None)
    tmp = Path(group.broadcast(str(tmp) if tmp else None))
    try:
        stats = SaveStats()
        group.agree(lambda: _write_local(model, tensors, out_dtypes, layout, tmp, group.rank, stats))
        _last_stats = stats
        if group.rank == 0:
            group.agree(
                lambda: _finish(model, layout, tmp, dst, overwrite=overwrite, save_config=save_config)
            )
        else:
            group.agree(lambda: None)
    except BaseException:
        if group.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return resolve_local(dst, variant=variant, variant_fallback="allow", weights_name=name)


class _Group:
    """The few collectives save needs, with a one-process fallback and errors shared by all ranks."""

    def __init__(self, process_group: Any) -> None:
        import torch.distributed as dist

        self.dist = dist if dist.is_available() and dist.is_initialized() else None
        self.group = process_group
        self.rank = self.dist.get_rank(process_group) if self.dist else 0
        self.size = self.dist.get_world_size(process_group) if self.dist else 1

    def broadcast(self, value: Any) -> Any:
        if self.dist is None:
            return value
        box = [value]
        src = self.dist.get_global_rank(self.group, 0) if self.group is not None else 0
        self.dist.broadcast_object_list(box, src=src, group=self.group)
        return box[0]

    def agree(self, step: Any) -> Any:
        """Run ``step`` on every rank; if any rank fails, every rank raises (no rank is left waiting)."""
        error: str | None = None
        failure: Exception | None = None
        result = None
        try:
            result = step()
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if self.dist is None:
                raise
            failure = exc
        errors = [error]
        if self.dist is not None:
            errors = [None] * self.size
            self.dist.all_gather_object(errors, error, group=self.group)
        failed = [(rank, e) for rank, e in enumerate(errors) if e is not None]
        if failed:
            if failure is not None:
                raise failure
            rank, message = failed[0]
            raise CkptError(f"rank {rank} failed while saving: {message}")
        return result

    run_first = agree


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


def write_blank_files(directory: Path, layout: ShardLayout) -> None:
    """Create every file of ``layout`` at its final size, with its header written and data zero."""
    for shard in layout.files:
        fd = os.open(directory / shard.filename, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, shard.file_size)
            _pwrite_all(fd, memoryview(shard.header), 0)
        finally:
            os.close(fd)


def _prepare(dst: Path, layout: ShardLayout, overwrite: bool) -> Path:
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())) and not overwrite:
        raise FileExistsError(
            f"{dst}: exists and is not empty. Fix: choose a new directory or pass overwrite=True"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.ckptkit-{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        write_blank_files(tmp, layout)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return tmp


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
                    _pwrite_all(fd, raw[run.target : run.target + run.nbytes], base + run.source)
                    stats.bytes_written += run.nbytes
                stats.tensors_written += 1
        for fd in fds.values():
            os.fsync(fd)
    finally:
        for fd in fds.values():
            os.close(fd)


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    done = 0
    while done < len(data):
        done += os.pwrite(fd, data[done:], offset + done)


def _finish(
    model: torch.nn.Module | None,
    layout: ShardLayout,
    tmp: Path,
    dst: Path,
    *,
    overwrite: bool,
    save_config: bool,
) -> None:
    if layout.index_name is not None:
        (tmp / layout.index_name).write_bytes(layout.index_bytes())
    if save_config and model is not None:
        _write_config(model, tmp)
    _fsync_dir(tmp)
    trash = None
    if dst.exists():
        if overwrite or (dst.is_dir() and not any(dst.iterdir())):
            trash = dst.parent / f".{dst.name}.ckptkit-{uuid.uuid4().hex[:8]}.old"
            os.rename(dst, trash)
        else:
            raise FileExistsError(f"{dst}: appeared while saving. Fix: choose a new directory")
    os.rename(tmp, dst)
    _fsync_dir(dst.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
