"""What saving says between ranks goes through the group's store, never through a gloo collective.

A gloo collective's buffers are freed by the backend's worker thread just after the call returns;
when ``save_sharded`` is the last thing a script does, that thread can free them while Python shuts
down and the process aborts (``terminate called without an active exception``: seen in 2 of 20
``torchrun`` runs of docs/distributed.md's script before this change). So ``save_sharded`` on an
FSDP2 model issues no collective at all, a rank that fails still makes every rank raise (in the
world and in a smaller group), and the store keeps no trail of earlier exchanges.
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
    from torch.distributed import distributed_c10d as c10d
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

    pair = dist.new_group([1, 2])  # made before the spies: new_group synchronizes the ranks itself
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
            assert rank != 1 and "rank 1 failed while saving: ValueError: disk full" in str(exc)
        except ValueError as exc:  # the failing rank raises its own error
            assert rank == 1 and str(exc) == "disk full"
        else:
            raise AssertionError(f"rank {rank}: agree() did not raise")
        assert group.agree(lambda: rank) == rank  # later exchanges do not see earlier values

        # A group of global ranks 1 and 2: its rank 0 is global rank 1; a failure names both numbers.
        if rank in (1, 2):
            sub = RankGroup(pair)
            assert sub.broadcast(f"from rank {rank}") == "from rank 1"
            try:
                sub.agree(lambda: 1 / (rank - 2))
            except CkptError as exc:
                assert rank == 1 and "rank 2 (rank 1 of its group) failed" in str(exc), exc
            except ZeroDivisionError:
                assert rank == 2
            else:
                raise AssertionError(f"rank {rank}: the group's agree() did not raise")

        # Exchanges leave no trail in the store: rank 0 deletes what every rank has read.
        store = c10d._get_process_group_store(c10d._get_default_group())
        group.agree(lambda: None)
        settled = store.num_keys()
        for _ in range(5):
            group.broadcast(list(range(100)))
            group.agree(lambda: None)
        if rank == 0:
            assert store.num_keys() == settled, (settled, store.num_keys())
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
    mp.spawn(_worker, args=(3, os.fspath(tmp_path / "store"), os.fspath(tmp_path)), nprocs=3, join=True)
    reference = LlamaForCausalLM.from_pretrained(tmp_path / "ckpt").state_dict()
    again = LlamaForCausalLM.from_pretrained(tmp_path / "saved").state_dict()
    assert again.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(again[key], value), key
