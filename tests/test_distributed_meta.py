"""The FSDP2 recipe in one call: build on meta, fully_shard, load_sharded — on 2 gloo ranks.

Real model classes (diffusers' Wan transformer, whose rotary tables are non-persistent buffers;
transformers' Llama, whose ``inv_freq`` is one), compared with the model loaded in one process.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from ckptkit import load_sharded
from ckptkit.errors import CkptWarning
from tests._models import build_wan_dit
from tests._versions import diffusers_class
from tests.test_distributed import (
    INPUT_IDS,
    _expected_local,
    _init,
    load_reference,
    save_tiny_llama,
    tiny_llama_config,
)

WAN_INPUTS = {
    "hidden_states": torch.linspace(-1, 1, 1 * 4 * 2 * 8 * 8).reshape(1, 4, 2, 8, 8),
    "timestep": torch.tensor([500]),
    "encoder_hidden_states": torch.linspace(-1, 1, 1 * 5 * 16).reshape(1, 5, 16),
}


class _Computed(torch.nn.Module):
    """A module whose non-persistent buffer is computed in __init__ and that has no config."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(4, 4)
        self.register_buffer("table", torch.arange(4.0), persistent=False)


def _meta_worker(rank: int, world: int, store: str, root: str) -> None:
    import torch.distributed as dist
    from diffusers import WanTransformer3DModel
    from safetensors.torch import save_file
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from transformers import LlamaForCausalLM

    _init(rank, world, store)
    base = Path(root)
    mesh = init_device_mesh("cpu", (world,))

    # diffusers Wan: rope.freqs_cos / freqs_sin are computed in __init__, in no checkpoint.
    config = WanTransformer3DModel.load_config(base / "wan")
    with torch.device("meta"):
        wan = WanTransformer3DModel.from_config(config)
    for block in wan.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(wan, mesh=mesh)
    result = load_sharded(base / "wan", model=wan)
    assert result.allocated_on == torch.device("cpu")
    rope = {f"rope.{name}" for name, _ in wan.rope.named_buffers()}
    if rope:
        assert rope == {"rope.freqs_cos", "rope.freqs_sin"} <= set(result.recomputed_buffers)
    else:  # older diffusers (0.33) keep the rope table as a plain attribute, in no module state
        assert "rope.freqs" in result.recomputed_buffers and not wan.rope.freqs.is_meta
    assert result.uninitialized_buffers == [] and result.missing_keys == []
    reference = load_reference(base / "wan")
    for name, param in wan.named_parameters():
        assert isinstance(param, DTensor) and torch.equal(
            param.to_local(), _expected_local(reference[name], param)
        ), name
    with torch.no_grad():
        got = wan(**WAN_INPUTS, return_dict=False)[0]
    torch.testing.assert_close(got, torch.load(base / "wan_out.pt"), rtol=1e-5, atol=1e-5)

    # transformers Llama: rotary inv_freq likewise; logits equal the one-process model's.
    with torch.device("meta"):
        llama = LlamaForCausalLM(tiny_llama_config())
    for layer in llama.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(llama, mesh=mesh)
    loaded = load_sharded(base / "llama", model=llama, device="cpu")
    assert "model.rotary_emb.inv_freq" in loaded.recomputed_buffers
    with torch.no_grad():
        logits = llama(INPUT_IDS).logits
    torch.testing.assert_close(logits, torch.load(base / "logits.pt"), rtol=1e-5, atol=1e-5)

    # No config to rebuild from: the buffer is named, and a warning says so.
    if rank == 0:
        save_file(
            {"proj.weight": torch.ones(4, 4), "proj.bias": torch.zeros(4)}, base / "computed.safetensors"
        )
    dist.barrier()
    with torch.device("meta"):
        plain = _Computed()
    fully_shard(plain, mesh=mesh)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        named = load_sharded(base / "computed.safetensors", model=plain)
    assert named.uninitialized_buffers == ["table"] and named.recomputed_buffers == []
    assert any(issubclass(w.category, CkptWarning) and "table" in str(w.message) for w in caught)

    # Partly on meta: allocating would discard values, so the error stays.
    with torch.device("meta"):
        mixed = _Computed()
    mixed.table = torch.arange(4.0)
    fully_shard(mixed, mesh=mesh)
    with pytest.raises(ValueError, match="lives on the meta device"):
        load_sharded(base / "computed.safetensors", model=mixed)
    dist.barrier()
    dist.destroy_process_group()


def test_fsdp2_model_built_on_meta_loads_in_one_call(tmp_path):
    import torch.multiprocessing as mp
    from transformers import LlamaForCausalLM

    diffusers_class("WanTransformer3DModel")  # the Wan DiT is in diffusers >= 0.33
    wan = build_wan_dit()
    wan.save_pretrained(tmp_path / "wan", max_shard_size="20KB")
    with torch.no_grad():
        torch.save(wan(**WAN_INPUTS, return_dict=False)[0], tmp_path / "wan_out.pt")
    save_tiny_llama(tmp_path / "llama")
    with torch.no_grad():
        torch.save(
            LlamaForCausalLM.from_pretrained(tmp_path / "llama")(INPUT_IDS).logits, tmp_path / "logits.pt"
        )
    mp.spawn(_meta_worker, args=(2, os.fspath(tmp_path / "store"), os.fspath(tmp_path)), nprocs=2, join=True)
