"""load_sharded hands device_map= loads to accelerate placement and DTensor models to the per-rank loader."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from ckptkit import load_sharded
from ckptkit.distributed import DistributedLoadResult
from ckptkit.placement.dispatch import PlacementResult
from tests.test_distributed import load_reference, save_tiny_llama, tiny_llama_config
from tests.test_placement import _ids, _llama_config, _meta_llama


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.Tensor]:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("llama")
    reference = LlamaForCausalLM(_llama_config()).eval()
    reference.save_pretrained(directory, max_shard_size="60KB")
    again = LlamaForCausalLM.from_pretrained(directory).eval()
    with torch.no_grad():
        return directory, again(_ids()).logits


def test_device_map_goes_through_accelerate_placement(llama, tmp_path) -> None:
    directory, reference_logits = llama
    model = _meta_llama()
    folder = tmp_path / "offload"
    result = load_sharded(
        directory, model=model, device_map="auto", max_memory={"cpu": "100KiB"}, offload_folder=folder
    )
    assert isinstance(result, PlacementResult)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert {"cpu", "disk"} <= set(result.device_map.values())
    assert sorted(os.listdir(folder)) == ["index.json"]
    assert json.loads((folder / "index.json").read_text()) == result.offload_index
    with torch.no_grad():
        assert torch.equal(model(_ids()).logits, reference_logits)


def test_device_map_with_prefixes_maps_keys(llama, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    directory, reference_logits = llama
    wrapped = tmp_path / "wrapped"
    wrapped.mkdir()
    state = {}
    for shard in sorted(directory.glob("*.safetensors")):
        state.update(load_file(shard))
    save_file({f"module._orig_mod.{k}": v for k, v in state.items()}, wrapped / "model.safetensors")
    model = _meta_llama()
    load_sharded(wrapped, model=model, device_map={"": "cpu"}, strip_prefixes=("module.", "_orig_mod."))
    with torch.no_grad():
        assert torch.equal(model(_ids()).logits, reference_logits)


def test_device_map_needs_a_model(llama) -> None:
    with pytest.raises(ValueError, match="model="):
        load_sharded(llama[0], device_map="auto")


def test_dtensor_model_is_loaded_per_rank(tmp_path) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import LlamaForCausalLM

    ckpt = save_tiny_llama(tmp_path / "ckpt")
    reference = load_reference(ckpt)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{tmp_path / 'store'}",
        rank=0,
        world_size=1,
        timeout=timedelta(seconds=60),
    )
    try:
        mesh = init_device_mesh("cpu", (1,))
        torch.manual_seed(5)
        model = LlamaForCausalLM(tiny_llama_config())
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        result = load_sharded(ckpt, model=model)
        assert isinstance(result, DistributedLoadResult)
        assert result.missing_keys == [] and result.unexpected_keys == []
        assert result.bytes_read == result.bytes_total
        for key, value in model.state_dict().items():
            assert torch.equal(value.full_tensor(), reference[key]), key
    finally:
        dist.destroy_process_group()
