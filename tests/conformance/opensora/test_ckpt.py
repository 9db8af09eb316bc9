"""Open-Sora 2.0 ``opensora.utils.ckpt.load_checkpoint``: upstream's code (``_upstream_v2.py``) vs the shim.

2.0's builders (MMDiT ``flux``, ``hunyuan_vae``, ``autoencoder_2d``, DC-AE) call
``load_checkpoint(model, from_pretrained, cache_dir=, device_map=, strict=)``.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from ckptkit.shims.opensora import load_checkpoint_v2
from tests.conformance.opensora import _upstream_v2
from tests.conformance.opensora._tiny import STDiT3, assert_same, build, save_booster, trained


def both(path, seed=0, **kwargs):
    upstream, shim = build(STDiT3, seed), build(STDiT3, seed)
    assert _upstream_v2.load_checkpoint(upstream, str(path), **kwargs) is upstream
    assert load_checkpoint_v2(shim, str(path), **kwargs) is shim
    return upstream, shim


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_safetensors_release(tmp_path, strict, dtype):
    path = tmp_path / "Open_Sora_v2.safetensors"
    save_file({k: v.to(dtype) for k, v in trained(STDiT3).items()}, path)
    assert_same(*both(path, strict=strict, device_map="cpu"))


@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_torch_file(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save(trained(STDiT3), path)
    assert_same(*both(path, device_map=torch.device("cpu")))


def test_colossalai_directory(tmp_path):
    directory = save_booster(trained(STDiT3), tmp_path / "epoch0-global_step500", per_shard=3)
    assert_same(*both(directory, cai_model_name="model", strict=True))


def test_from_the_hub(hub, hub_cache, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert_same(*both("org/Open-Sora-v2/Open_Sora_v2.safetensors", cache_dir=str(hub_cache)))


def test_rename_keys(tmp_path):
    """Fine-tuning from another architecture: {old substring: new substring}, first match per key."""
    state = {k.replace("spatial_blocks.", "double_blocks."): v for k, v in trained(STDiT3).items()}
    save_file(state, tmp_path / "model.safetensors")
    renames = {"double_blocks.": "spatial_blocks.", "blocks.": "never."}
    upstream, shim = both(tmp_path / "model.safetensors", rename_keys=renames)
    assert_same(upstream, shim)
    assert torch.equal(shim.spatial_blocks[1].attn.weight, state["double_blocks.1.attn.weight"])


def test_rename_keys_is_honoured_for_torch_files(tmp_path):
    """Upstream renames only .safetensors (a .pt silently keeps its names); the shim renames every format."""
    state = {k.replace("spatial_blocks.", "double_blocks."): v for k, v in trained(STDiT3).items()}
    torch.save(state, tmp_path / "model.pt")
    save_file(state, tmp_path / "model.safetensors")
    from_pt, from_st = build(STDiT3, 0), build(STDiT3, 0)
    load_checkpoint_v2(from_pt, tmp_path / "model.pt", rename_keys={"double_blocks.": "spatial_blocks."})
    load_checkpoint_v2(
        from_st, tmp_path / "model.safetensors", rename_keys={"double_blocks.": "spatial_blocks."}
    )
    assert_same(from_pt, from_st)


def test_strict_errors_alike(tmp_path):
    state = trained(STDiT3)
    del state["final_layer.linear.bias"]
    save_file(state, tmp_path / "model.safetensors")
    for load in (_upstream_v2.load_checkpoint, load_checkpoint_v2):
        with pytest.raises(RuntimeError, match=r"final_layer\.linear\.bias"):
            load(build(STDiT3, 0), str(tmp_path / "model.safetensors"), strict=True)


def test_device_map_must_be_a_device(tmp_path):
    save_file(trained(STDiT3), tmp_path / "model.safetensors")
    with pytest.raises(TypeError, match="device_map"):
        load_checkpoint_v2(build(STDiT3, 0), tmp_path / "model.safetensors", device_map={"": "cpu"})  # type: ignore[arg-type]
