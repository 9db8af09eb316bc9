from __future__ import annotations

import json
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, T5EncoderModel, UMT5EncoderModel

from ckptkit import CkptWarning, CorruptCheckpointError, IncompleteCheckpointError, VariantNotFoundError
from ckptkit.adapters import load_t5
from tests._versions import dtype_kwarg, private_memory_kwarg
from tests.adapters._compare import assert_same_weights

IDS = torch.tensor([[5, 6, 7, 8, 1, 0], [9, 10, 1, 0, 0, 0]])
MASK = (IDS != 0).long()


def hidden(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK).last_hidden_state


def assert_same_model(ours, reference) -> None:
    assert_same_weights(ours, reference)
    assert torch.equal(hidden(ours), hidden(reference))


@pytest.mark.parametrize("name", ["t5_sharded", "t5_single", "t5_variants", "t5_bin"])
def test_equals_from_pretrained(layouts, name):
    assert_same_model(load_t5(layouts[name]), T5EncoderModel.from_pretrained(layouts[name]))


def test_fp16_variant_keeps_wo_in_fp32(layouts):
    ours = load_t5(layouts["t5_variants"], variant="fp16")
    reference = T5EncoderModel.from_pretrained(layouts["t5_variants"], variant="fp16")
    assert_same_model(ours, reference)
    assert ours.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype == torch.float32
    # fp16 as stored where from_pretrained keeps the stored dtype (transformers 5), else float32
    assert ours.shared.weight.dtype == reference.shared.weight.dtype


@pytest.mark.parametrize("kwargs", [{"dtype": torch.float16}, {"dtype": "fp16"}, {"torch_dtype": "float16"}])
def test_dtype_forms_and_keep_in_fp32(layouts, kwargs):
    ours = load_t5(layouts["t5_single"], **kwargs)
    assert_same_model(
        ours, T5EncoderModel.from_pretrained(layouts["t5_single"], **dtype_kwarg(torch.float16))
    )
    assert ours.encoder.block[1].layer[1].DenseReluDense.wo.weight.dtype == torch.float32


def test_bf16_casts_everything(layouts):
    # transformers keeps `wo` in fp32 only under fp16
    ours = load_t5(layouts["t5_sharded"], dtype="bf16")
    assert_same_model(
        ours, T5EncoderModel.from_pretrained(layouts["t5_sharded"], **dtype_kwarg(torch.bfloat16))
    )
    assert {p.dtype for p in ours.parameters()} == {torch.bfloat16}


def test_dtype_wins_over_torch_dtype(layouts):
    ours = load_t5(layouts["t5_single"], torch_dtype=torch.float16, dtype=torch.bfloat16)
    assert ours.shared.weight.dtype == torch.bfloat16


def test_only_fp16_files_loads_them_with_a_warning(layouts):
    with pytest.warns(CkptWarning, match="only the 'fp16' variant"):
        ours = load_t5(layouts["t5_fp16_only"])
    assert_same_model(ours, T5EncoderModel.from_pretrained(layouts["t5_fp16_only"], variant="fp16"))


def test_missing_variant_falls_back_and_casts(layouts):
    with pytest.warns(CkptWarning, match="variant 'fp16' was requested"):
        ours = load_t5(layouts["t5_sharded"], variant="fp16")
    assert_same_model(
        ours, T5EncoderModel.from_pretrained(layouts["t5_sharded"], **dtype_kwarg(torch.float16))
    )


def test_missing_variant_error_policy(layouts):
    with pytest.raises(VariantNotFoundError, match="there are only the default weights"):
        load_t5(layouts["t5_sharded"], variant="fp16", variant_fallback="error")


def test_shared_embedding_is_tied(layouts):
    ours = load_t5(layouts["t5_sharded"])
    assert ours.encoder.embed_tokens.weight is ours.shared.weight


def test_checkpoint_that_stores_only_the_copy_of_the_embedding(layouts, tmp_path):
    directory = tmp_path / "t5_old"
    directory.mkdir()
    state = load_file(layouts["t5_single"] / "model.safetensors")
    state["encoder.embed_tokens.weight"] = state.pop("shared.weight")
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    (directory / "config.json").write_text((layouts["t5_single"] / "config.json").read_text())
    ours = load_t5(directory)
    assert ours.encoder.embed_tokens.weight is ours.shared.weight
    assert torch.equal(hidden(ours), hidden(T5EncoderModel.from_pretrained(layouts["t5_single"])))


def test_umt5_class_and_tokenizer_from_config(more_layouts):
    ours, tokenizer = load_t5(more_layouts["umt5"], with_tokenizer=True)
    assert_same_model(ours, UMT5EncoderModel.from_pretrained(more_layouts["umt5"]))
    reference = AutoTokenizer.from_pretrained(more_layouts["umt5"])
    assert tokenizer("a red cat").input_ids == reference("a red cat").input_ids


@pytest.mark.parametrize(
    ("name", "cls"), [("pixart_pipeline", T5EncoderModel), ("wan_pipeline", UMT5EncoderModel)]
)
def test_pipeline_picks_text_encoder_and_tokenizer(more_layouts, name, cls):
    ours, tokenizer = load_t5(more_layouts[name], with_tokenizer=True)
    assert_same_model(ours, cls.from_pretrained(more_layouts[name], subfolder="text_encoder"))
    assert tokenizer("a cat").input_ids == [3, 4, 1]


def test_subfolder_and_config_kwargs_pass_through(more_layouts):
    ours = load_t5(more_layouts["pixart_pipeline"], subfolder="text_encoder", dropout_rate=0.25)
    assert ours.config.dropout_rate == 0.25


@pytest.mark.parametrize("device_map", ["cpu", {"": "cpu"}, torch.device("cpu")])
def test_device_map_forms(layouts, device_map):
    ours = load_t5(layouts["t5_single"], device_map=device_map)
    assert {p.device.type for p in ours.parameters()} == {"cpu"}


def test_missing_shard_fails_before_building(layout_copy):
    directory = layout_copy("t5_sharded")
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    victim = sorted(set(index["weight_map"].values()))[-1]
    (directory / victim).unlink()
    with pytest.raises(IncompleteCheckpointError, match=victim):
        load_t5(directory)


def test_truncated_shard_is_a_typed_error(layout_copy):
    directory = layout_copy("t5_sharded")
    shard = sorted(directory.glob("model-*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpointError, match=shard.name):
        load_t5(directory)


def test_not_a_t5_config(layouts):
    with pytest.raises(CorruptCheckpointError, match="not a T5 encoder"):
        load_t5(layouts["vae_variants"])


def test_no_tokenizer_is_a_typed_error(layouts):
    from ckptkit import CheckpointNotFoundError

    with pytest.raises(CheckpointNotFoundError, match="tokenizer"):
        load_t5(layouts["t5_single"], with_tokenizer=True)


def test_weights_that_do_not_fit_the_config(layout_copy):
    directory = layout_copy("t5_single")
    config = json.loads((directory / "config.json").read_text())
    config["d_model"] = 48
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CorruptCheckpointError, match="shape"):
        load_t5(directory)


def test_unused_tensors_warn(layout_copy):
    directory = layout_copy("t5_single")
    state = load_file(directory / "model.safetensors")
    state["extra.weight"] = torch.zeros(2)
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_t5(directory)
    assert any(issubclass(w.category, CkptWarning) and "extra.weight" in str(w.message) for w in caught)


def test_loader_options_are_accepted_not_put_in_the_config(layouts):
    ours = load_t5(
        layouts["t5_single"], use_safetensors=True, force_download=False, output_loading_info=False
    )
    assert not hasattr(ours.config, "use_safetensors")
    with pytest.raises(ValueError, match="quantization_config"):
        load_t5(layouts["t5_single"], quantization_config={"load_in_8bit": True})


@pytest.mark.parametrize("device_map", ["auto", {"shared": "cpu", "encoder": "cpu"}])
def test_planned_device_maps_dispatch_with_accelerate(layouts, device_map):
    ours = load_t5(layouts["t5_single"], device_map=device_map)
    assert set(ours.hf_device_map.values()) == {"cpu"}  # set by accelerate's dispatch_model
    assert_same_model(ours, T5EncoderModel.from_pretrained(layouts["t5_single"]))


def test_auto_device_map_offloads_to_disk_and_still_runs(layouts, tmp_path):
    ours = load_t5(
        layouts["t5_single"],
        device_map="auto",
        max_memory={"cpu": 40_000},
        offload_folder=tmp_path / "offload",
    )
    assert "disk" in set(ours.hf_device_map.values())
    reference = T5EncoderModel.from_pretrained(layouts["t5_single"])
    assert torch.equal(hidden(ours), hidden(reference))


@pytest.mark.parametrize("device_map", [None, "auto"])
def test_disable_mmap_gives_private_weights_equal_to_from_pretrained(layouts, device_map):
    from tests.adapters._compare import file_backed

    default = load_t5(layouts["t5_sharded"], device_map=device_map)
    private = load_t5(layouts["t5_sharded"], device_map=device_map, disable_mmap=True)
    assert all(file_backed(t) for t in default.state_dict().values())
    assert not any(file_backed(t) for t in private.state_dict().values())
    reference = T5EncoderModel.from_pretrained(layouts["t5_sharded"], **private_memory_kwarg())
    assert torch.equal(hidden(private), hidden(reference))
