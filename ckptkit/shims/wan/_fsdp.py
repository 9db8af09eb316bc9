"""Wan's ``shard_model`` on FSDP2, and a DiT that each rank fills with only its own shards."""

from __future__ import annotations

import os
import weakref
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, ShardingStrategy, fully_shard

from ckptkit.distributed import load_sharded_distributed
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.shims.wan._checkpoint import WanCheckpoint, _wan, wan_checkpoint

__all__ = ["meta_dit", "shard_model"]

#: meta-built DiTs -> (their checkpoint, the dtype their weights are read at)
_SOURCES: weakref.WeakKeyDictionary[torch.nn.Module, tuple[CheckpointDir, torch.dtype | None]] = (
    weakref.WeakKeyDictionary()
)


def meta_dit(
    checkpoint_dir: str | os.PathLike[str] | WanCheckpoint,
    model_class: type | None = None,
    *,
    subfolder: str | None = None,
    torch_dtype: torch.dtype | str | None = None,
) -> torch.nn.Module:
    """The DiT of ``WanModel.from_pretrained(checkpoint_dir, subfolder=, torch_dtype=)``, built on meta, unread.

    :func:`shard_model` then shards it and fills it, each rank reading only its own shards' bytes
    from the checkpoint. Its parameters and buffers take no memory until then; the rotary table
    (``freqs``, a plain attribute in Wan's classes) is computed as Wan's ``__init__`` does.

    Args:
        checkpoint_dir: the Wan ``ckpt_dir`` (or what :func:`wan_checkpoint` returned).
        model_class: default Wan's ``WanModel``; ``WanModel_S2V``, ``WanAnimateModel``...
        subfolder: ``None`` (root), ``"low_noise_model"`` or ``"high_noise_model"``.
        torch_dtype: the dtype the weights are kept at (default float32, as ``from_pretrained``).
            Every parameter, even of a class's ``_keep_in_fp32_modules`` (diffusers'
            ``WanTransformer3DModel``; Wan's own classes have none): FSDP shards one dtype per group.
    """
    from accelerate import init_empty_weights  # accelerate comes with the hf extra: imported on use

    cls: Any = model_class if model_class is not None else _wan("wan.modules.model").WanModel
    parts = checkpoint_dir if isinstance(checkpoint_dir, WanCheckpoint) else wan_checkpoint(checkpoint_dir)
    ckpt = parts.dit_checkpoint(subfolder)
    with init_empty_weights():
        model = cls.from_config(cls.load_config(ckpt.path))
    for module in model.modules():  # buffers too: every tensor on meta, as FSDP2's meta recipe wants
        for name, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[name] = buffer.to("meta")
    dtype = to_torch_dtype(torch_dtype) if torch_dtype is not None else None
    if dtype is not None:
        model.to(dtype)
    _SOURCES[model] = (ckpt, dtype)
    return model.eval()


def _device(device_id: Any) -> torch.device:
    if isinstance(device_id, int):
        return torch.device("cuda", device_id)
    return torch.device(device_id)


def _reshard_after_forward(sharding_strategy: ShardingStrategy) -> bool:
    if sharding_strategy == ShardingStrategy.FULL_SHARD:
        return True
    if sharding_strategy == ShardingStrategy.SHARD_GRAD_OP:
        return False
    raise ValueError(
        f"sharding_strategy={sharding_strategy!r} is not supported by ckptkit's shard_model "
        "(FSDP2): pass ShardingStrategy.FULL_SHARD or ShardingStrategy.SHARD_GRAD_OP"
    )


def shard_model(
    model: torch.nn.Module,
    device_id: int | str | torch.device,
    param_dtype: torch.dtype = torch.bfloat16,
    reduce_dtype: torch.dtype = torch.float32,
    buffer_dtype: torch.dtype = torch.float32,
    process_group: Any = None,
    sharding_strategy: ShardingStrategy = ShardingStrategy.FULL_SHARD,
    sync_module_states: bool = True,
    use_lora: bool = False,
) -> torch.nn.Module:
    """Wan's ``wan.distributed.fsdp.shard_model``, on FSDP2: each of ``model.blocks`` and the root sharded.

    The same arguments as Wan's (FSDP1) function: ``param_dtype`` / ``reduce_dtype`` become FSDP2's
    ``MixedPrecisionPolicy``, floating buffers are cast to ``buffer_dtype``, ``FULL_SHARD`` /
    ``SHARD_GRAD_OP`` reshard after forward or not. A model from :func:`meta_dit` is filled after
    sharding, each rank reading only its own shards' bytes (Wan loads the whole model on every rank
    first); a model that holds its weights is sharded as it is, after a broadcast from rank 0 when
    ``sync_module_states``. FSDP2 always keeps the original parameters, which is what ``use_lora``
    asks of FSDP1.

    Returns:
        ``model`` itself, now an FSDP2 module (its parameters are DTensors), in Wan's place of the
        ``FullyShardedDataParallel`` wrapper.

    Raises:
        ValueError: a ``sharding_strategy`` other than those two (``HYBRID_SHARD``, ``NO_SHARD``...).
        RuntimeError: no process group is initialised.
    """
    del use_lora  # FSDP2 parameters are always the original ones
    reshard = _reshard_after_forward(sharding_strategy)
    if not dist.is_initialized():
        raise RuntimeError("shard_model() needs torch.distributed initialised (init_process_group)")
    device = _device(device_id)
    group: Any = process_group if process_group is not None else dist.group.WORLD
    source = _SOURCES.pop(model, None)
    if source is None and sync_module_states:
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor, src=dist.get_global_rank(group, 0), group=group)
    for module in model.modules():
        for name, buffer in module._buffers.items():
            if buffer is not None and buffer.is_floating_point():
                module._buffers[name] = buffer.to(buffer_dtype)
    mesh = DeviceMesh.from_group(group, device.type)
    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    for block in model.blocks:  # type: ignore[union-attr]  # Wan's DiTs and T5 encoder
        fully_shard(block, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard)
    if source is not None:
        ckpt, dtype = source
        # FSDP shards one dtype per group (FSDP1 flattens them, FSDP2 asserts it): no float32 islands
        load_sharded_distributed(ckpt, model, dtype=dtype, device=device, keep_in_fp32_modules=[])
    return model
