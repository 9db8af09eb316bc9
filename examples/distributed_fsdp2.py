"""Load and save an FSDP2-sharded model with ckptkit.distributed: each rank touches only its own bytes.

Two CPU processes (gloo) shard a tiny Llama with ``fully_shard`` built on the meta device, load a
checkpoint written by transformers' ``save_pretrained`` in one call (each rank allocates and reads
only its shards; the rotary frequencies are recomputed as the model's own init does), run a
forward pass, and save the model back as an ordinary sharded checkpoint without gathering it.

Run: python examples/distributed_fsdp2.py
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


def config():
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )


def worker(rank: int, world: int, root: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaForCausalLM

    from ckptkit.distributed import load_sharded_distributed, save_sharded

    store = os.path.join(root, "store")
    torch.set_num_threads(1)  # several ranks share few cores: keep them from oversubscribing
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=timedelta(seconds=300)
    )
    mesh = init_device_mesh("cpu", (world,))
    with torch.device("meta"):
        model = LlamaForCausalLM(config())
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)

    # One call: allocates this rank's shards (on the mesh's device), recomputes the rotary
    # frequencies no checkpoint holds, and reads only this rank's bytes.
    result = load_sharded_distributed(Path(root) / "ckpt", model)
    if rank == 0:
        print(f"allocated on {result.allocated_on}; recomputed: {result.recomputed_buffers}")
    ids = torch.arange(8).unsqueeze(0)
    with torch.no_grad():
        logits = model(ids).logits
        expected = LlamaForCausalLM.from_pretrained(Path(root) / "ckpt")(ids).logits
    print(
        f"rank {rank}: read {result.bytes_read} of {result.bytes_total} bytes "
        f"({result.bytes_read / result.bytes_total:.0%}); logits equal the single-process model's: "
        f"{torch.allclose(logits, expected, atol=1e-5)}"
    )
    if not torch.allclose(logits, expected, atol=1e-5):
        raise SystemExit(1)
    saved = save_sharded(model, Path(root) / "saved", max_shard_size="100KB")
    if rank == 0:
        print("saved:", sorted(p.name for p in saved.weight_files))
    del model  # the model's device mesh holds the process group: let both go while Python runs
    gc.collect()  # frees what the model left in reference cycles
    dist.barrier()  # no rank tears gloo down while another still talks to it
    dist.destroy_process_group()


def main() -> None:
    from transformers import LlamaForCausalLM

    with tempfile.TemporaryDirectory() as root:
        torch.manual_seed(0)
        reference = LlamaForCausalLM(config())
        reference.save_pretrained(Path(root) / "ckpt", max_shard_size="100KB")
        mp.spawn(worker, args=(2, root), nprocs=2, join=True)

        again = LlamaForCausalLM.from_pretrained(Path(root) / "saved")
        same = all(torch.equal(again.state_dict()[k], v) for k, v in reference.state_dict().items())
        print("from_pretrained of the saved checkpoint equals the original:", same)
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
