"""The adapters take ``from_pretrained``'s arguments: each honoured as the library does, or refused by name."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, PixArtTransformer2DModel
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, T5EncoderModel

from ckptkit import CheckpointNotFoundError
from ckptkit.adapters import load_dit, load_t5, load_vae
from tests import _models


def error_of(call, *args, **kwargs) -> str:
    with pytest.raises(TypeError) as info:
        call(*args, **kwargs)
    return str(info.value)


def test_t5_positional_model_args_reach_the_class_as_in_transformers(layouts):
    path = layouts["t5_single"]
    ours = error_of(load_t5, path, "extra")
    theirs = error_of(T5EncoderModel.from_pretrained, path, "extra")
    assert ours == theirs and "positional" in ours


def test_t5_config_object_and_path(layouts, tmp_path):
    path = layouts["t5_single"]
    config = AutoConfig.from_pretrained(path)
    config.dropout_rate = 0.25
    ours = load_t5(path, config=config)
    assert (
        ours.config.dropout_rate
        == 0.25
        == T5EncoderModel.from_pretrained(path, config=config).config.dropout_rate
    )
    assert config.dropout_rate == 0.25 and ours.config is not config  # copied, as transformers does

    config.save_pretrained(tmp_path / "other-config")
    ours = load_t5(path, config=str(tmp_path / "other-config"))
    theirs = T5EncoderModel.from_pretrained(path, config=str(tmp_path / "other-config"))
    assert ours.config.dropout_rate == theirs.config.dropout_rate == 0.25


def test_t5_unknown_keyword_is_a_type_error_naming_it(layouts):
    path = layouts["t5_single"]
    assert "not_an_option" in error_of(load_t5, path, not_an_option=1)
    assert "not_an_option" in error_of(T5EncoderModel.from_pretrained, path, not_an_option=1)
    assert load_t5(path, dropout_rate=0.3).config.dropout_rate == 0.3  # config attributes still override


def test_t5_output_loading_info(layouts, tmp_path):
    path = layouts["t5_single"]
    ours, info = load_t5(path, output_loading_info=True)
    theirs, their_info = T5EncoderModel.from_pretrained(path, output_loading_info=True)
    assert type(ours) is type(theirs)
    assert info == their_info

    directory = tmp_path / "t5-extra"
    directory.mkdir()
    state = load_file(path / "model.safetensors")
    state["extra.weight"] = torch.zeros(2)
    state["decoder.block.0.layer.0.SelfAttention.q.weight"] = torch.zeros(2)  # ignored by the class
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    (directory / "config.json").write_text((path / "config.json").read_text())
    with pytest.warns(UserWarning):
        _, info = load_t5(directory, output_loading_info=True)
    _, their_info = T5EncoderModel.from_pretrained(directory, output_loading_info=True)
    assert info["unexpected_keys"] == their_info["unexpected_keys"]  # a set (transformers 5) or a list (4.x)
    assert set(info["unexpected_keys"]) == {"extra.weight"}


def test_t5_loading_info_with_tokenizer(layouts, tmp_path):
    directory = _models.copy_tree(layouts["t5_single"], tmp_path / "t5")
    _models.build_tokenizer().save_pretrained(directory)
    model, tokenizer, info = load_t5(directory, with_tokenizer=True, output_loading_info=True)
    assert (
        isinstance(model, T5EncoderModel) and tokenizer("a cat").input_ids and len(info["missing_keys"]) == 0
    )


@pytest.mark.parametrize(
    ("load", "name", "cls"),
    [(load_vae, "vae_variants", AutoencoderKL), (load_dit, "pixart", PixArtTransformer2DModel)],
)
def test_diffusers_output_loading_info(layouts, load, name, cls):
    ours, info = load(layouts[name], output_loading_info=True)
    theirs, their_info = cls.from_pretrained(layouts[name], output_loading_info=True)
    assert type(ours) is type(theirs)
    assert info == their_info


@pytest.mark.parametrize(
    ("load", "name", "cls"),
    [(load_vae, "vae_variants", AutoencoderKL), (load_dit, "pixart", PixArtTransformer2DModel)],
)
def test_diffusers_positional_and_config_are_type_errors(layouts, load, name, cls):
    error_of(cls.from_pretrained, layouts[name], "extra")
    assert "positional" in error_of(load, layouts[name], "extra")
    error_of(cls.from_pretrained, layouts[name], config=str(layouts[name]))
    assert "config" in error_of(load, layouts[name], config=str(layouts[name]))


def test_diffusers_unknown_keyword_is_refused_where_diffusers_drops_it(layouts):
    AutoencoderKL.from_pretrained(layouts["vae_variants"], not_an_option=1)  # diffusers: a warning
    assert "not_an_option" in error_of(load_vae, layouts["vae_variants"], not_an_option=1)
    assert load_vae(layouts["vae_variants"], scaling_factor=0.5).config.scaling_factor == 0.5


@pytest.mark.parametrize(
    "option",
    [
        {"force_download": True},
        {"proxies": {"https": "http://proxy"}},
        {"ignore_mismatched_sizes": True},
        {"weights_only": False},
        {"use_safetensors": False},
        {"mirror": "tuna"},
        {"key_mapping": {"a": "b"}},
    ],
)
@pytest.mark.parametrize("load", [load_t5, load_vae])
def test_options_ckptkit_cannot_honour_are_refused_by_name(layouts, load, option):
    path = layouts["t5_single"] if load is load_t5 else layouts["vae_variants"]
    assert next(iter(option)) in error_of(load, path, **option)


@pytest.mark.parametrize(
    "option",
    [
        {"resume_download": True},
        {"disable_mmap": True},
        {"offload_state_dict": True},
        {"force_download": False},
    ],
)
def test_options_with_nothing_left_to_do_are_accepted(layouts, option):
    assert isinstance(load_t5(layouts["t5_single"], **option), T5EncoderModel)
    assert isinstance(load_vae(layouts["vae_variants"], **option), AutoencoderKL)


def test_use_safetensors_true_requires_safetensors(layouts):
    assert isinstance(load_t5(layouts["t5_single"], use_safetensors=True), T5EncoderModel)
    with pytest.raises(CheckpointNotFoundError, match="use_safetensors"):
        load_t5(layouts["t5_bin"], use_safetensors=True)
