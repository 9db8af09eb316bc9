"""ckptkit's ``shard_model`` (FSDP2, each rank reading its own shards) against Wan's (FSDP1), on 2 CPU ranks.

Wan's ``shard_model`` runs on CPU with gloo when given ``device_id=torch.device("cpu")`` and
``sync_module_states=False`` (FSDP1 refuses to sync CPU states and needs a device otherwise); its
call sites pass ``device_id=<rank>`` (CUDA). Both shard the same ``WanModel`` from the same release
files; the full state dicts they gather and one mixed-precision forward pass must be equal.
"""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

CPU = torch.device("cpu")


def _full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.tensor import DTensor

    if isinstance(model, FSDP):
        with FSDP.state_dict_type(
            model, StateDictType.FULL_STATE_DICT, FullStateDictConfig(rank0_only=False)
        ):
            return dict(model.state_dict())
    return {k: v.full_tensor() if isinstance(v, DTensor) else v for k, v in model.state_dict().items()}


def _forward(model: torch.nn.Module) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return model(
            [torch.randn(4, 1, 4, 4, generator=generator)],
            torch.tensor([500.0]),
            [torch.randn(3, 4096, generator=generator)],
            seq_len=4,
        )[0]


def _worker(rank: int, world: int, root: str, store: str) -> None:
    from ckptkit.shims import wan as shim
    from tests.conformance._upstream import cpu_attention
    from tests.conformance.wan.conftest import wan_model

    import wan.distributed.fsdp as wan_fsdp  # isort: skip

    torch.set_num_threads(1)
    wan_model.flash_attention = cpu_attention()
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=timedelta(seconds=120)
    )
    try:
        theirs = wan_fsdp.shard_model(
            wan_model.WanModel.from_pretrained(root), device_id=CPU, sync_module_states=False
        )
        # the ckptkit way: built on meta, each rank reads only its shards
        ours = shim.shard_model(shim.meta_dit(root), device_id=CPU)
        # a model that holds its weights (Wan's own from_pretrained, or the T5 via shard_fn) is sharded as it is
        loaded = shim.shard_model(wan_model.WanModel.from_pretrained(root), device_id=CPU)
        q = ours.blocks[0].self_attn.q.weight
        assert q.to_local().numel() * world == q.full_tensor().numel()  # each rank holds its part only
        reference = _full_state(theirs)
        for model in (ours, loaded):
            state = _full_state(model)
            assert state.keys() == reference.keys()
            for name, tensor in reference.items():
                assert state[name].dtype == tensor.dtype == torch.float32, name
                assert torch.equal(state[name], tensor), name
        # one forward, computing in float32: Wan's bfloat16 forward relies on CUDA autocast regions
        # (its float32 islands are torch.cuda.amp.autocast blocks, inert on a CPU)
        expected = _forward(
            wan_fsdp.shard_model(
                wan_model.WanModel.from_pretrained(root),
                device_id=CPU,
                param_dtype=torch.float32,
                sync_module_states=False,
            )
        )
        out = _forward(shim.shard_model(shim.meta_dit(root), device_id=CPU, param_dtype=torch.float32))
        assert torch.equal(out, expected), (out - expected).abs().max()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_shard_model_matches_wans_fsdp_on_two_cpu_ranks(wan_release, tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(2, str(wan_release["wan21"]), str(tmp_path / "store")), nprocs=2, join=True)


def test_shard_model_refuses_what_fsdp2_cannot_do(tiny_wan, wan_release):
    from torch.distributed.fsdp import ShardingStrategy

    from ckptkit.shims import wan as shim

    model = shim.meta_dit(wan_release["wan21"])
    with pytest.raises(ValueError, match="HYBRID_SHARD"):
        shim.shard_model(model, CPU, sharding_strategy=ShardingStrategy.HYBRID_SHARD)
    with pytest.raises(RuntimeError, match="init_process_group"):
        shim.shard_model(model, CPU)
