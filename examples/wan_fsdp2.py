"""A Wan DiT sharded with FSDP2 and loaded rank by rank: no rank ever holds the whole model.

Wan's own ``shard_model`` builds and loads the full DiT on every rank before FSDP shards it, so each
rank's host RAM must hold all the weights at start-up. Here two CPU processes (gloo) build a tiny
``WanTransformer3DModel`` on the meta device, ``fully_shard`` every block and the root, and hand it to
``load_sharded_distributed``, which allocates only each rank's shards and fills them from a Wan-native checkpoint
directory (the DiT's diffusers shards in the root beside the T5 ``.pth`` and the VAE). The forward
pass is compared with the single-process ``from_pretrained`` model.

On GPUs: ``torchrun --nproc-per-node N`` with ``init_process_group("nccl")`` and
``init_device_mesh("cuda", (N,))``; the rest is the same.

Run: python examples/wan_fsdp2.py
"""

from __future__ import annotations

import gc
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

CONFIG = {
    "patch_size": (1, 2, 2),
    "num_attention_heads": 2,
    "attention_head_dim": 12,
    "in_channels": 4,
    "out_channels": 4,
    "text_dim": 16,
    "freq_dim": 16,
    "ffn_dim": 32,
    "num_layers": 2,
    "rope_max_seq_len": 32,
}


def inputs() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return {
        "hidden_states": torch.randn(1, 4, 2, 8, 8, generator=generator),
        "timestep": torch.tensor([500]),
        "encoder_hidden_states": torch.randn(1, 6, 16, generator=generator),
    }


def worker(rank: int, world: int, root: str) -> None:
    from diffusers import WanTransformer3DModel
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from ckptkit.distributed import load_sharded_distributed

    torch.set_num_threads(1)  # several ranks share few cores: keep them from oversubscribing
    dist.init_process_group(
        "gloo",
        init_method=f"file://{os.path.join(root, 'store')}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=300),
    )
    mesh = init_device_mesh("cpu", (world,))
    ckpt_dir = Path(root) / "Wan2.1-T2V-tiny"
    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(WanTransformer3DModel.load_config(ckpt_dir))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    # Allocates this rank's shards on the mesh's device, recomputes the rotary tables (no checkpoint
    # holds them), then reads only the bytes of this rank's shards.
    result = load_sharded_distributed(ckpt_dir, model)
    # (rope.freqs_cos and rope.freqs_sin; diffusers 0.33 keeps one plain rope.freqs)
    assert any(name.startswith("rope.freqs") for name in result.recomputed_buffers)
    with torch.no_grad():
        out = model(**inputs(), return_dict=False)[0]
        expected = WanTransformer3DModel.from_pretrained(ckpt_dir)(**inputs(), return_dict=False)[0]
    same = torch.allclose(out, expected, atol=1e-5)
    print(
        f"rank {rank}: read {result.bytes_read:,} of {result.bytes_total:,} bytes "
        f"({result.bytes_read / result.bytes_total:.0%}); output equals the single-process model's: {same}"
    )
    del model  # the model's device mesh holds the process group: let both go while Python runs
    gc.collect()  # frees what the model left in reference cycles
    dist.barrier()  # no rank tears gloo down while another still talks to it
    dist.destroy_process_group()
    if not same:
        raise SystemExit(1)


def main() -> None:
    from diffusers import WanTransformer3DModel

    with tempfile.TemporaryDirectory() as root:
        ckpt_dir = Path(root) / "Wan2.1-T2V-tiny"
        torch.manual_seed(0)
        WanTransformer3DModel(**CONFIG).save_pretrained(ckpt_dir, max_shard_size="20KB")
        # Wan's other parts sit beside the DiT; ckptkit picks the DiT's shards and leaves them be.
        torch.save({"shared.weight": torch.zeros(4, 4)}, ckpt_dir / "models_t5_umt5-xxl-enc-bf16.pth")
        torch.save({"decoder.weight": torch.zeros(4, 4)}, ckpt_dir / "Wan2.1_VAE.pth")
        print("checkpoint:", sorted(p.name for p in ckpt_dir.iterdir()))
        mp.spawn(worker, args=(2, root), nprocs=2, join=True)


if __name__ == "__main__":
    main()
