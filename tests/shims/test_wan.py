from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from ckptkit import CheckpointNotFoundError
from ckptkit.shims.wan import load_dit, wan_checkpoint
from tests._versions import diffusers_class

# every test here loads a Wan DiT (diffusers >= 0.33); on an older diffusers the module is skipped
WanTransformer3DModel = diffusers_class("WanTransformer3DModel")


def run(model):
    torch.manual_seed(0)
    with torch.no_grad():
        return model(
            torch.randn(1, 4, 2, 8, 8, dtype=torch.bfloat16),
            torch.tensor([10]),
            torch.randn(1, 5, 16, dtype=torch.bfloat16),
        ).sample


def test_wan21_parts(shim_layouts):
    root = shim_layouts["wan21"]
    parts = wan_checkpoint(root)
    assert parts.t5_checkpoint == root / "models_t5_umt5-xxl-enc-bf16.pth"
    assert parts.t5_tokenizer == root / "google" / "umt5-xxl"
    assert parts.vae_checkpoint == root / "Wan2.1_VAE.pth"
    assert list(parts.dit) == [""]
    assert parts.dit[""].index_file == root / "diffusion_pytorch_model.safetensors.index.json"

    for ours, path in [
        (parts.t5_state_dict(), parts.t5_checkpoint),
        (parts.vae_state_dict(), parts.vae_checkpoint),
    ]:
        expected = torch.load(path, map_location="cpu")  # what Wan does (without weights_only)
        assert ours.keys() == expected.keys()
        assert all(ours[k].dtype == v.dtype and torch.equal(ours[k], v) for k, v in expected.items())
    assert AutoTokenizer.from_pretrained(parts.t5_tokenizer)("a cat").input_ids == [3, 4, 1]

    expected = {}
    for shard in parts.dit[""].weight_files:
        expected |= load_file(shard)
    dit = parts.dit_state_dict()
    assert dit.keys() == expected.keys()
    assert all(dit[k].dtype == torch.bfloat16 and torch.equal(dit[k], v) for k, v in expected.items())


def test_wan22_two_experts(shim_layouts):
    root = shim_layouts["wan22"]
    parts = wan_checkpoint(root)
    assert parts.vae_checkpoint == root / "Wan2.2_VAE.pth"
    assert parts.t5_tokenizer is None
    assert sorted(parts.dit) == ["high_noise_model", "low_noise_model"]
    with pytest.raises(CheckpointNotFoundError, match="low_noise_model"):
        parts.dit_checkpoint()
    for expert in ("low_noise_model", "high_noise_model"):
        ours = load_dit(root, WanTransformer3DModel, subfolder=expert, torch_dtype=torch.bfloat16)
        reference = WanTransformer3DModel.from_pretrained(root, subfolder=expert, torch_dtype=torch.bfloat16)
        for tensor in reference.parameters():
            tensor.data = tensor.data.clone()  # aligned memory, as ckptkit reads (see tests/adapters)
        assert torch.equal(run(ours), run(reference))


def test_dit_keeps_torch_dtype(shim_layouts):
    model = load_dit(shim_layouts["wan21"], WanTransformer3DModel, torch_dtype="bf16")
    reference = WanTransformer3DModel.from_pretrained(shim_layouts["wan21"], torch_dtype=torch.bfloat16)
    ours_state, ref_state = model.state_dict(), reference.state_dict()
    assert all(ours_state[k].dtype == v.dtype and torch.equal(ours_state[k], v) for k, v in ref_state.items())
    assert model.blocks[0].ffn.net[0].proj.weight.dtype == torch.bfloat16
    assert model.scale_shift_table.dtype == torch.float32  # the class's _keep_in_fp32_modules
    assert not model.training


def test_missing_parts_are_reported(shim_layouts, tmp_path):
    root = tmp_path / "partial"
    shutil.copytree(shim_layouts["wan21"], root)
    (root / "models_t5_umt5-xxl-enc-bf16.pth").unlink()
    parts = wan_checkpoint(root)
    with pytest.raises(CheckpointNotFoundError, match=r"models_t5_umt5-xxl-enc-bf16\.pth"):
        parts.t5_state_dict()
    with pytest.raises(CheckpointNotFoundError, match="is not a directory"):
        wan_checkpoint(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="holds none of"):
        wan_checkpoint(tmp_path / "empty")


def test_dit_defaults_to_float32_like_from_pretrained(shim_layouts):
    model = load_dit(shim_layouts["wan21"], WanTransformer3DModel)
    reference = WanTransformer3DModel.from_pretrained(shim_layouts["wan21"])
    ours_state, ref_state = model.state_dict(), reference.state_dict()
    assert {v.dtype for v in ref_state.values()} == {torch.float32}
    assert all(ours_state[k].dtype == v.dtype and torch.equal(ours_state[k], v) for k, v in ref_state.items())


def test_dit_device_map_is_honoured_or_refused(shim_layouts):
    model = load_dit(shim_layouts["wan21"], WanTransformer3DModel, device_map="cpu")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    model = load_dit(shim_layouts["wan21"], WanTransformer3DModel, device_map={"": "cpu"})
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    with pytest.raises(ValueError, match="device_map='nonsense'"):
        load_dit(shim_layouts["wan21"], WanTransformer3DModel, device_map="nonsense")
    with pytest.raises(TypeError, match="device_map"):
        load_dit(shim_layouts["wan21"], WanTransformer3DModel, device_map=1.5)
    with pytest.raises(TypeError, match="device="):
        load_dit(shim_layouts["wan21"], WanTransformer3DModel, device="cpu", device_map="cpu")


def test_dit_unknown_keyword_is_a_type_error(shim_layouts):
    with pytest.raises(TypeError, match="low_cpu_mem_usage"):
        load_dit(shim_layouts["wan21"], WanTransformer3DModel, low_cpu_mem_usage=False)
    model = load_dit(shim_layouts["wan21"], WanTransformer3DModel, rope_max_seq_len=64)  # a config field
    assert model.config.rope_max_seq_len == 64


def test_meta_dit_then_shard_model_fills_each_rank_from_the_checkpoint(shim_layouts, tmp_path):
    import torch.distributed as dist
    from torch.distributed.fsdp import ShardingStrategy

    from ckptkit.shims.wan import meta_dit, shard_model

    root = shim_layouts["wan21"]
    model = meta_dit(root, WanTransformer3DModel)
    assert {p.device.type for p in model.parameters()} == {"meta"}
    with pytest.raises(ValueError, match="HYBRID_SHARD"):  # FSDP2 has no hybrid strategy here: refused
        shard_model(model, torch.device("cpu"), sharding_strategy=ShardingStrategy.HYBRID_SHARD)
    with pytest.raises(RuntimeError, match="init_process_group"):
        shard_model(model, torch.device("cpu"))
    bf16 = meta_dit(root, WanTransformer3DModel, torch_dtype=torch.bfloat16)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert shard_model(model, torch.device("cpu"), param_dtype=torch.float32) is model
        reference = WanTransformer3DModel.from_pretrained(root)  # float32
        state = {k: v.full_tensor() for k, v in model.state_dict().items()}
        assert state.keys() == reference.state_dict().keys()
        assert all(
            state[k].dtype == v.dtype and torch.equal(state[k], v) for k, v in reference.state_dict().items()
        )
        generator = torch.Generator().manual_seed(0)
        inputs = (
            torch.randn(1, 4, 2, 8, 8, generator=generator),
            torch.tensor([10]),
            torch.randn(1, 5, 16, generator=generator),
        )
        with torch.no_grad():
            assert torch.equal(model(*inputs).sample, reference(*inputs).sample)
        # torch_dtype: every parameter at it (FSDP shards one dtype per group), the class's fp32 modules too
        shard_model(bf16, torch.device("cpu"))
        assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
        with torch.no_grad():
            assert bf16(*inputs).sample.shape == reference(*inputs).sample.shape
    finally:
        dist.destroy_process_group()
