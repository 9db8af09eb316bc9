"""Placement with accelerate: maps, CPU and disk offload, outputs equal to the fully loaded model."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from ckptkit.errors import CkptError, CkptWarning, ModelMismatchError
from ckptkit.placement.device_map import checkpoint_tensors, expand_device_map, plan_device_map
from ckptkit.placement.dispatch import PlacementResult, infer_device_map, load_with_device_map
from ckptkit.resolve.resolve import resolve_ckpt_dir
from tests._versions import accelerate_balances_without_gpus, dtype_kwarg

# A tiny Llama: embed 16 KiB, each decoder layer ~37 KiB, lm_head 16 KiB (fp32), 6 layers.
LLAMA = dict(
    vocab_size=128,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=6,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
)


def _llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(**LLAMA)


def _meta_llama():
    from accelerate import init_empty_weights
    from transformers import LlamaForCausalLM

    with init_empty_weights():
        return LlamaForCausalLM(_llama_config()).eval()


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("llama")
    LlamaForCausalLM(_llama_config()).eval().save_pretrained(directory, max_shard_size="60KB")
    return directory


@pytest.fixture(scope="module")
def llama_bin(tmp_path_factory: pytest.TempPathFactory, llama_dir: Path) -> Path:
    from safetensors.torch import load_file

    directory = tmp_path_factory.mktemp("llama_bin")
    state = {}
    for shard in sorted(llama_dir.glob("*.safetensors")):
        state.update(load_file(shard))
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.json").write_text((llama_dir / "config.json").read_text())
    return directory


@pytest.fixture(scope="module")
def reference_logits(llama_dir: Path) -> torch.Tensor:
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(llama_dir).eval()
    with torch.no_grad():
        return model(_ids()).logits


def _ids() -> torch.Tensor:
    return torch.arange(12).reshape(1, 12) * 7 % 128


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(_ids()).logits


def _names(directory: Path) -> list[str]:
    return [e.name for e in checkpoint_tensors(resolve_ckpt_dir(directory))]


# -- maps --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "max_memory"),
    [
        ("auto", {"cpu": "1MiB"}),
        ("auto", {"cpu": "100KiB"}),
        ("sequential", {"cpu": "150KiB"}),
        ("sequential", {0: "120KiB", "cpu": "100KiB"}),
        ("auto", {0: "120KiB", 1: "120KiB", "cpu": "100KiB"}),
        ("balanced_low_0", {0: "200KiB", 1: "200KiB", 2: "100KiB", "cpu": "1MiB"}),
    ],
)
def test_header_plan_places_every_tensor_as_accelerate_does(llama_dir, mode, max_memory):
    planned = plan_device_map(llama_dir, device_map=mode, max_memory=max_memory).device_map
    gpus = any(isinstance(d, int) for d in max_memory)
    if (
        gpus
        and mode != "sequential"
        and not torch.cuda.is_available()
        and not accelerate_balances_without_gpus()
    ):
        # an accelerate that cannot balance GPU budgets here: a typed error naming the header planner
        with pytest.raises(CkptError, match="plan_device_map"):
            infer_device_map(llama_dir, _meta_llama(), device_map=mode, max_memory=max_memory)
        return
    inferred = infer_device_map(llama_dir, _meta_llama(), device_map=mode, max_memory=max_memory)
    names = _names(llama_dir)
    assert expand_device_map(planned, names) == expand_device_map(inferred, names)
    # same map up to modules the file cannot show (the rotary table is a non-persistent buffer)
    assert planned == {k: v for k, v in inferred.items() if k != "model.rotary_emb"}


def test_sizes_are_those_of_the_dtype_the_model_will_hold(llama_dir):
    budget = {"cpu": "100KiB"}
    fp32 = plan_device_map(llama_dir, max_memory=budget)
    bf16 = plan_device_map(llama_dir, max_memory=budget, dtype="bf16")
    assert bf16.total_bytes * 2 == fp32.total_bytes
    assert list(bf16.device_map.values()).count("disk") < list(fp32.device_map.values()).count("disk") or (
        "disk" not in bf16.device_map.values()
    )
    inferred = infer_device_map(llama_dir, _meta_llama(), max_memory=budget, dtype=torch.bfloat16)
    names = _names(llama_dir)
    assert expand_device_map(bf16.device_map, names) == expand_device_map(inferred, names)


def test_plan_json_round_trips_into_a_load(llama_dir, reference_logits, tmp_path):
    plan = plan_device_map(llama_dir, max_memory="cpu=100KiB")
    passed = json.loads(json.dumps(plan.to_dict()))["device_map"]
    assert {"cpu", "disk"} <= set(passed.values())
    model = _meta_llama()
    result = load_with_device_map(llama_dir, model, device_map=passed, offload_folder=tmp_path / "off")
    names = _names(llama_dir)
    assert expand_device_map(result.device_map, names) == expand_device_map(plan.device_map, names)
    assert model.hf_device_map == result.device_map
    assert torch.equal(_logits(model), reference_logits)


# -- loads -------------------------------------------------------------------------------------


def test_tight_budget_offloads_to_disk_without_copying_safetensors(llama_dir, reference_logits, tmp_path):
    before = {p: p.stat().st_mtime_ns for p in llama_dir.iterdir()}
    model = _meta_llama()
    folder = tmp_path / "offload"
    result = load_with_device_map(
        llama_dir, model, device_map="auto", max_memory={"cpu": "100KiB"}, offload_folder=folder
    )
    assert isinstance(result, PlacementResult)
    assert {"cpu", "disk"} <= set(result.device_map.values())
    assert sorted(os.listdir(folder)) == ["index.json"]
    index = json.loads((folder / "index.json").read_text())
    assert index == result.offload_index and result.converted == []
    shards = {os.path.abspath(p) for p in llama_dir.glob("*.safetensors")}
    assert {entry["safetensors_file"] for entry in index.values()} <= shards
    disk = [n for n, d in expand_device_map(result.device_map, _names(llama_dir)).items() if d == "disk"]
    assert sorted(index) == sorted(disk)
    # disk weights stay on meta until a forward needs them; cpu ones are real
    assert all(model.get_parameter(n).device.type == "meta" for n in disk)
    assert torch.equal(_logits(model), reference_logits)
    assert {p: p.stat().st_mtime_ns for p in llama_dir.iterdir()} == before


def test_hand_written_map_mixing_cpu_and_disk(llama_dir, reference_logits, tmp_path):
    device_map = {"model.embed_tokens": "disk", "model.norm": "cpu", "lm_head": "disk"}
    device_map.update({f"model.layers.{i}": "disk" if i % 2 else "cpu" for i in range(6)})
    model = _meta_llama()
    result = load_with_device_map(llama_dir, model, device_map=device_map, offload_folder=tmp_path / "o")
    assert result.device_map["model.rotary_emb"] == "cpu"  # not in the map: goes to the main device
    assert model.model.layers[0].mlp.up_proj.weight.device.type == "cpu"
    assert "model.layers.1.mlp.up_proj.weight" in result.offload_index
    assert torch.equal(_logits(model), reference_logits)


def test_disk_offload_without_folder_keeps_the_index_in_memory(llama_dir, reference_logits):
    model = _meta_llama()
    result = load_with_device_map(llama_dir, model, device_map={"model": "cpu", "lm_head": "disk"})
    assert result.offload_folder is None and list(result.offload_index) == ["lm_head.weight"]
    assert torch.equal(_logits(model), reference_logits)


def test_cpu_only_map_needs_no_hooks(llama_dir, reference_logits):
    model = _meta_llama()
    result = load_with_device_map(llama_dir, model, device_map="cpu")
    assert result.device_map == {"": "cpu"} and not result.offload_index
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert torch.equal(_logits(model), reference_logits)


def test_dtype_is_what_the_model_holds(llama_dir, tmp_path):
    from transformers import LlamaForCausalLM

    expected = _logits(LlamaForCausalLM.from_pretrained(llama_dir, **dtype_kwarg(torch.bfloat16)).eval())
    model = _meta_llama()
    result = load_with_device_map(
        llama_dir,
        model,
        device_map={"model": "cpu", "lm_head": "disk"},
        dtype="bf16",
        offload_folder=tmp_path / "o",
    )
    assert model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert result.offload_index["lm_head.weight"]["dtype"] == "bfloat16"
    assert torch.equal(_logits(model), expected)


def test_torch_source_is_converted_once(llama_bin, reference_logits, tmp_path):
    folder = tmp_path / "offload"
    budget = {"cpu": "100KiB"}
    first_model = _meta_llama()
    first = load_with_device_map(
        llama_bin, first_model, device_map="auto", max_memory=budget, offload_folder=folder
    )
    assert first.converted and sorted(first.converted) == sorted(first.offload_index)
    dat = sorted(folder.glob("*.dat"))
    assert len(dat) == len(first.converted)
    stamps = {p: p.stat().st_mtime_ns for p in dat}
    assert torch.equal(_logits(first_model), reference_logits)

    second_model = _meta_llama()
    second = load_with_device_map(
        llama_bin, second_model, device_map="auto", max_memory=budget, offload_folder=folder
    )
    assert second.converted == []
    assert {p: p.stat().st_mtime_ns for p in folder.glob("*.dat")} == stamps
    assert torch.equal(_logits(second_model), reference_logits)


def test_torch_source_with_disk_entries_needs_a_folder(llama_bin):
    with pytest.raises(ValueError, match="offload_folder"):
        load_with_device_map(llama_bin, _meta_llama(), device_map={"model": "cpu", "lm_head": "disk"})


def test_mismatched_checkpoint_is_refused_before_anything_is_read(llama_dir, tmp_path):
    from transformers import LlamaForCausalLM

    small = tmp_path / "small"
    config = _llama_config()
    config.num_hidden_layers = 2
    LlamaForCausalLM(config).save_pretrained(small)
    model = _meta_llama()
    with pytest.raises(ModelMismatchError, match="missing") as info:
        load_with_device_map(small, model, device_map="cpu")
    assert str(small) in str(info.value)
    assert all(p.device.type == "meta" for p in model.parameters())
    with pytest.warns(CkptWarning, match="not in the checkpoint"):
        result = load_with_device_map(
            small, model, device_map={"model": "cpu", "lm_head": "disk"}, strict=False
        )
    assert "model.layers.5.mlp.up_proj.weight" in result.missing_keys
    assert torch.count_nonzero(model.model.layers[5].mlp.up_proj.weight) == 0
    assert _logits(model).shape == (1, 12, 128)


def test_wrong_shape_is_a_typed_error(llama_dir, tmp_path):
    from accelerate import init_empty_weights
    from transformers import LlamaForCausalLM

    config = _llama_config()
    config.intermediate_size = 48
    with init_empty_weights():
        model = LlamaForCausalLM(config)
    with pytest.raises(ModelMismatchError, match="shape"):
        load_with_device_map(llama_dir, model, device_map="cpu")


# -- tied weights and diffusers ----------------------------------------------------------------


def test_tied_t5_encoder_with_its_shared_embedding_on_disk(layouts, tmp_path):
    from accelerate import init_empty_weights
    from transformers import T5EncoderModel

    directory = layouts["t5_sharded"]
    reference = T5EncoderModel.from_pretrained(directory).eval()
    ids = torch.tensor([[3, 5, 7, 11, 2]])
    with init_empty_weights():
        model = T5EncoderModel(reference.config).eval()
    device_map = {"shared": "disk", "encoder.embed_tokens": "disk", "encoder.block.0": "cpu"}
    device_map.update(
        {"encoder.block.1": "disk", "encoder.final_layer_norm": "cpu", "encoder.dropout": "cpu"}
    )
    result = load_with_device_map(directory, model, device_map=device_map, offload_folder=tmp_path / "o")
    assert result.missing_keys == []
    with torch.no_grad():
        assert torch.equal(model(ids).last_hidden_state, reference(ids).last_hidden_state)


# accelerate's own map names PixArt's root parameter scale_shift_table, then warns it is no submodule
@pytest.mark.filterwarnings("ignore:The following device_map keys do not match")
def test_pixart_blocks_stay_whole_and_outputs_match(layouts, tmp_path):
    from accelerate import init_empty_weights
    from diffusers import PixArtTransformer2DModel

    directory = layouts["pixart"]
    reference = PixArtTransformer2DModel.from_pretrained(directory).eval()
    with init_empty_weights():
        model = PixArtTransformer2DModel.from_config(reference.config).eval()
    assert "BasicTransformerBlock" in model._no_split_modules
    total = sum(p.numel() * 4 for p in reference.parameters())
    result = load_with_device_map(
        directory, model, device_map="auto", max_memory={"cpu": total * 3 // 4}, offload_folder=tmp_path / "o"
    )
    assert {"cpu", "disk"} <= set(result.device_map.values())
    blocks = [k for k in result.device_map if k.startswith("transformer_blocks.")]
    assert blocks and all(k.count(".") == 1 for k in blocks)
    torch.manual_seed(1)
    sample = torch.randn(1, 4, 8, 8)
    text = torch.randn(1, 3, 32)
    step = torch.tensor([10])
    extra = {"resolution": None, "aspect_ratio": None}
    with torch.no_grad():
        got = model(sample, encoder_hidden_states=text, timestep=step, added_cond_kwargs=extra).sample
        want = reference(sample, encoder_hidden_states=text, timestep=step, added_cond_kwargs=extra).sample
    assert torch.equal(got, want)


@pytest.mark.parametrize("mmap", [None, False])
def test_cpu_weights_are_file_backed_by_default_and_private_with_mmap_false(
    llama_dir, reference_logits, mmap
):
    model = _meta_llama()
    load_with_device_map(llama_dir, model, device_map={"model": "cpu", "lm_head": "disk"}, mmap=mmap)
    weights = [p for n, p in model.named_parameters() if n.startswith("model.")]
    backed = [not w.untyped_storage().resizable() for w in weights]
    assert all(backed) if mmap is None else not any(backed)
    assert torch.equal(_logits(model), reference_logits)


def test_mmap_keeps_cpu_weights_file_backed(llama_dir, reference_logits):
    model = _meta_llama()
    load_with_device_map(llama_dir, model, device_map={"model": "cpu", "lm_head": "disk"}, mmap=True)
    weight = model.model.layers[0].mlp.up_proj.weight
    assert weight.device.type == "cpu" and not weight.untyped_storage().resizable()
    assert torch.equal(_logits(model), reference_logits)
    with torch.no_grad():
        weight.mul_(0)  # copy-on-write: the file is untouched
    fresh = _meta_llama()
    load_with_device_map(llama_dir, fresh, device_map="cpu", mmap=True)
    assert torch.equal(_logits(fresh), reference_logits)


def test_key_map_loads_wrapped_keys_and_points_the_index_at_them(llama_dir, reference_logits, tmp_path):
    from safetensors.torch import load_file, save_file

    wrapped = tmp_path / "wrapped"
    wrapped.mkdir()
    state = {}
    for shard in sorted(llama_dir.glob("*.safetensors")):
        state.update(load_file(shard))
    save_file(
        {f"module.{k}": v for k, v in state.items()} | {"module.step": torch.zeros(1)},
        wrapped / "model.safetensors",
    )

    def unwrap(key: str) -> str | None:
        return None if key == "module.step" else key.removeprefix("module.")

    model = _meta_llama()
    result = load_with_device_map(
        wrapped, model, device_map={"model": "cpu", "lm_head": "disk"}, key_map=unwrap
    )
    assert result.unexpected_keys == []
    assert result.offload_index["lm_head.weight"]["weight_name"] == "module.lm_head.weight"
    assert torch.equal(_logits(model), reference_logits)
