"""plan_memory and `ckptkit plan`: numbers against a hand computation on generated checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ckptkit import CkptError, plan_memory
from ckptkit.placement.memory import find_blocks
from tests._hub import run_cli
from tests._subprocess import run_python

HIDDEN, BLOCKS, VOCAB = 64, 4, 16


@pytest.fixture
def dit(tmp_path) -> Path:
    """A DiT-shaped checkpoint in fp32: 4 blocks of (64x64 weight + 64 bias) x 2, embeddings, an int buffer."""
    tensors = {"embed.weight": torch.zeros(VOCAB, HIDDEN), "pos_ids": torch.zeros(10, dtype=torch.int64)}
    for i in range(BLOCKS):
        for part in ("attn", "mlp"):
            tensors[f"blocks.{i}.{part}.weight"] = torch.zeros(HIDDEN, HIDDEN)
            tensors[f"blocks.{i}.{part}.bias"] = torch.zeros(HIDDEN)
    tensors["final_norm.weight"] = torch.zeros(HIDDEN)
    directory = tmp_path / "dit"
    directory.mkdir()
    save_file(tensors, directory / "diffusion_pytorch_model.safetensors")
    return directory


def test_plan_equals_hand_computation(dit) -> None:
    # In bf16: floats take 2 bytes, the int64 buffer keeps its 8.
    block = 2 * (HIDDEN * HIDDEN + HIDDEN) * 2
    rest = VOCAB * HIDDEN * 2 + 10 * 8 + HIDDEN * 2
    weights = BLOCKS * block + rest
    plan = plan_memory(dit, devices=3, device_memory="48KiB", dtype="bf16")
    assert plan.weights_bytes == weights
    assert plan.parameter_count == BLOCKS * 2 * (HIDDEN * HIDDEN + HIDDEN) + VOCAB * HIDDEN + 10 + HIDDEN
    assert [b.name for b in plan.blocks] == [f"blocks.{i}" for i in range(BLOCKS)]
    assert plan.largest_block is not None and plan.largest_block.bytes == block
    assert plan.other_bytes == rest
    assert plan.strategy == "fsdp"
    fsdp = plan.estimates["fsdp"]
    assert fsdp.resident_bytes == math.ceil(weights / 3)
    assert fsdp.unshard_bytes == rest + block
    assert fsdp.peak_bytes == math.ceil(weights / 3) + rest + block
    assert fsdp.headroom_bytes == 48 * 1024 - fsdp.peak_bytes and fsdp.fits
    replicate = plan.estimates["replicate"]
    assert replicate.peak_bytes == weights and not replicate.fits
    offload = plan.estimates["offload"]
    assert (offload.resident_bytes, offload.peak_bytes, offload.host_bytes) == (rest, rest + block, weights)


def test_stored_dtypes_and_one_device(dit) -> None:
    plan = plan_memory(dit, device_memory=10**9)
    stored = sum(
        t.numel() * t.element_size() for t in _load(dit / "diffusion_pytorch_model.safetensors").values()
    )
    assert plan.weights_bytes == stored and plan.dtype is None
    assert plan.strategy == "replicate" and plan.fits
    assert plan.estimates["fsdp"].peak_bytes == stored  # one device: nothing to shard


def test_blocks_of_real_models(layouts) -> None:
    plan = plan_memory(layouts["pixart"], device_memory="1GB")
    names = [b.name for b in plan.blocks]
    assert names == ["transformer_blocks.0", "transformer_blocks.1"]
    tensors = _load(layouts["pixart"] / "diffusion_pytorch_model.safetensors")
    in_block = sum(
        t.numel() * t.element_size() for k, t in tensors.items() if k.startswith("transformer_blocks.0.")
    )
    assert plan.blocks[0].bytes == in_block
    t5 = plan_memory(layouts["t5_sharded"], device_memory="1GB")
    assert [b.name for b in t5.blocks] == ["encoder.block.0", "encoder.block.1"]
    total = sum(
        t.numel()
        for f in sorted(layouts["t5_sharded"].glob("model-*.safetensors"))
        for t in _load(f).values()
    )
    assert t5.parameter_count == total


def test_find_blocks_patterns() -> None:
    sizes = {
        "model.layers.0.q": 1,
        "model.layers.0.k": 1,
        "model.layers.11.q": 5,
        "transformer_blocks.3.attn.w": 2,
        "down_blocks.1.resnets.0.w": 3,
        "h.2.mlp": 4,
        "lm_head.weight": 9,
    }
    assert {b.name: b.bytes for b in find_blocks(sizes)} == {
        "model.layers.0": 2,
        "model.layers.11": 5,
        "transformer_blocks.3": 2,
        "down_blocks.1": 3,
        "h.2": 4,
    }


def test_plan_memory_and_the_device_map_share_one_block_rule() -> None:
    from ckptkit.placement.greedy import ModuleTree, TensorEntry

    # Where the two rules used to disagree: numbered modules under names that do not say "block"
    # (an LDM VAE's `up.0`, diffusers' `mid_block.resnets.0`, a Sequential embedder's `mlp.0`) and
    # a block list nested in another numbered module (`up.0.block.1` is inside `up.0`).
    names = [
        "decoder.up.0.block.1.conv.weight",
        "mid_block.resnets.0.norm.weight",
        "t_embedder.mlp.0.weight",
        "blocks.2.attn.weight",
        "scales.0",  # a ParameterList entry: its number ends the name, no block
        "head.weight",
    ]
    blocks = {b.name for b in find_blocks(dict.fromkeys(names, 4))}
    assert blocks == {"decoder.up.0", "mid_block.resnets.0", "t_embedder.mlp.0", "blocks.2"}
    tree = ModuleTree.from_entries([TensorEntry(n, "float32", (1,), 0) for n in names], None, None)
    assert tree.no_split == blocks


def test_variant_fallback_casts_and_errors(layouts) -> None:
    fp16 = plan_memory(layouts["pixart"], device_memory="1GB", variant="fp16")
    default = plan_memory(layouts["pixart"], device_memory="1GB")
    assert fp16.weights_bytes * 2 == default.weights_bytes
    with pytest.raises(ValueError, match="strategy"):
        plan_memory(layouts["pixart"], device_memory="1GB", strategy="zero3")
    with pytest.raises(ValueError, match="devices"):
        plan_memory(layouts["pixart"], device_memory="1GB", devices=0)
    with pytest.raises(CkptError, match="resave"):
        plan_memory(layouts["t5_bin"], device_memory="1GB")


def test_cli_plan_human_and_json(dit) -> None:
    human = run_cli("plan", str(dit), "--devices", "3", "--device-memory", "48KiB", "--dtype", "bf16")
    assert human.returncode == 0, human.stderr
    assert "* fsdp" in human.stdout and "fsdp fits" in human.stdout
    assert "4 blocks, largest blocks.0" in human.stdout
    data = json.loads(
        run_cli(
            "plan", str(dit), "--devices", "3", "--device-memory", "48KiB", "--dtype", "bf16", "--json"
        ).stdout
    )
    expected = plan_memory(dit, devices=3, device_memory="48KiB", dtype="bf16")
    assert data["estimates"]["fsdp"]["peak_bytes"] == expected.estimates["fsdp"].peak_bytes
    assert data["fits"] is True and data["blocks"] == BLOCKS and data["largest_block"]["name"] == "blocks.0"

    too_small = run_cli("plan", str(dit), "--device-memory", "1KiB", "--strategy", "replicate")
    assert too_small.returncode == 1 and "replicate does NOT fit" in too_small.stdout
    assert run_cli("plan", str(dit), "--device-memory", "lots").returncode == 2
    assert run_cli("plan", str(dit), "--device-memory", "1GB", "--devices", "0").returncode == 2
    bad_dtype = run_cli("plan", str(dit), "--device-memory", "1GB", "--dtype", "fp13")
    assert bad_dtype.returncode == 2 and bad_dtype.stderr.count("\n") == 1


def test_plan_never_imports_torch(dit) -> None:
    code = (
        "import sys, ckptkit; p = ckptkit.plan_memory(sys.argv[1], devices=2, device_memory='1GB'); "
        "assert p.fits; assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = run_python(code, str(dit))
    assert result.returncode == 0, result.stderr


def _load(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(path, "pt") as handle:
        return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 - safe_open is no Mapping
