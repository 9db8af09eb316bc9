"""What saving says between ranks goes through the group's store, never through a gloo collective.

A gloo collective's buffers are freed by the backend's worker thread just after the call returns;
when ``save_sharded`` is the last thing a script does, that thread can free them while Python shuts
down and the process aborts (``terminate called without an active exception``: seen in 2 of 20
``torchrun`` runs of docs/distributed.md's script before this change). So ``save_sharded`` on an
FSDP2 model issues no collective at all, and a rank that fails still makes every rank raise.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tests.test_distributed import _init, save_tiny_llama, tiny_llama_config

_COLLECTIVES = (
    "all_gather_object",
    "broadcast_object_list",
    "gather_object",
    "scatter_object_list",
    "all_gather",
    "all_gather_into_tensor",
    "broadcast",
    "all_reduce",
    "reduce",
    "gather",
    "scatter",
    "barrier",
    "monitored_barrier",
)


def _worker(rank: int, world: int, store: str, root: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaForCausalLM

    from ckptkit.distributed import load_sharded_distributed, save_sharded
    from ckptkit.distributed.ranks import RankGroup
    from ckptkit.errors import CkptError

    _init(rank, world, store)
    base = Path(root)
    mesh = init_device_mesh("cpu", (world,))
    with torch.device("meta"):
        model = LlamaForCausalLM(tiny_llama_config())
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    load_sharded_distributed(base / "ckpt", model)

    calls: list[str] = []
    originals = {name: getattr(dist, name) for name in _COLLECTIVES}

    def counted(name: str):
        def call(*args, **kwargs):
            calls.append(name)
            return originals[name](*args, **kwargs)

        return call

    for name in _COLLECTIVES:
        setattr(dist, name, counted(name))
    try:
        saved = save_sharded(model, base / "saved", max_shard_size="100KB")
        group = RankGroup(None)
        assert group.broadcast(f"from rank {rank}") == "from rank 0"

        def fails_on_rank_1() -> str:
            if rank == 1:
                raise ValueError("disk full")
            return "written"

        try:
            group.agree(fails_on_rank_1)
        except CkptError as exc:  # the other ranks learn which rank failed, and why
            assert rank == 0 and "rank 1 failed while saving: ValueError: disk full" in str(exc)
        except ValueError as exc:  # the failing rank raises its own error
            assert rank == 1 and str(exc) == "disk full"
        else:
            raise AssertionError(f"rank {rank}: agree() did not raise")
        assert group.agree(lambda: rank) == rank  # later exchanges do not see earlier values
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)
    assert calls == [], f"rank {rank}: save_sharded / RankGroup issued collectives {calls}"
    assert len(saved.weight_files) > 1
    del model
    dist.barrier()
    dist.destroy_process_group()


def test_saving_exchanges_through_the_store_not_collectives(tmp_path):
    import torch.multiprocessing as mp
    from transformers import LlamaForCausalLM

    save_tiny_llama(tmp_path / "ckpt")
    mp.spawn(_worker, args=(2, os.fspath(tmp_path / "store"), os.fspath(tmp_path)), nprocs=2, join=True)
    reference = LlamaForCausalLM.from_pretrained(tmp_path / "ckpt").state_dict()
    again = LlamaForCausalLM.from_pretrained(tmp_path / "saved").state_dict()
    assert again.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(again[key], value), key
