from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, T5EncoderModel

from ckptkit import CheckpointNotFoundError, CorruptCheckpointError, UnsafeCheckpointError
from ckptkit.shims.ltx import (
    create_ltx_video_pipeline,
    create_transformer,
    load_component,
    load_text_encoder,
    read_single_file,
)
from tests._versions import diffusers_class


def ltx_reference(path, component, model_class, prefix):
    """What LTX-Video does: build from the embedded config on meta, load_state_dict(assign=True)."""
    with safe_open(path, "pt") as f:
        config = json.loads(f.metadata()["config"])[component]
    state = {k[len(prefix) :]: v.clone() for k, v in load_file(path).items() if k.startswith(prefix)}
    with torch.device("meta"):
        model = model_class.from_config(config)
    model.load_state_dict(state, assign=True)
    return model.eval()


def run_dit(model):
    torch.manual_seed(0)
    dtype = model.dtype
    with torch.no_grad():
        return model(
            torch.randn(1, 32, 8, dtype=dtype),
            torch.randn(1, 5, 16, dtype=dtype),
            torch.tensor([10]),
            torch.ones(1, 5, dtype=torch.long),
            num_frames=2,
            height=4,
            width=4,
        ).sample


def test_single_file_configs_and_state_dicts(shim_layouts):
    path = shim_layouts["ltx_single"]
    single = read_single_file(path)
    with safe_open(path, "pt") as f:
        embedded = json.loads(f.metadata()["config"])
    assert single.transformer_config == embedded["transformer"]
    assert single.vae_config == embedded["vae"]
    assert single.scheduler_config["_class_name"] == "RectifiedFlowScheduler"
    everything = load_file(path)
    for component, prefix in [("transformer", "model.diffusion_model."), ("vae", "vae.")]:
        expected = {k[len(prefix) :]: v for k, v in everything.items() if k.startswith(prefix)}
        got = single.state_dict(component)
        assert got.keys() == expected.keys()
        assert all(torch.equal(got[k], v) for k, v in expected.items())
    assert {v.dtype for v in single.transformer_state_dict(dtype="bf16").values()} == {torch.bfloat16}


@pytest.mark.parametrize(
    ("name", "precision"),
    [("ltx_single", "bfloat16"), ("ltx_single", "float32"), ("ltx_single_bf16", "mixed")],
)
def test_create_transformer_matches_ltx(shim_layouts, name, precision):
    LTXVideoTransformer3DModel = diffusers_class("LTXVideoTransformer3DModel")
    path = shim_layouts[name]
    ours = create_transformer(str(path), precision, model_class=LTXVideoTransformer3DModel)
    reference = ltx_reference(path, "transformer", LTXVideoTransformer3DModel, "model.diffusion_model.")
    if precision == "bfloat16":
        reference = reference.to(torch.bfloat16)
    # LTX-Video's create_transformer builds with from_config and never calls eval(): neither do we
    assert type(ours) is LTXVideoTransformer3DModel and ours.training
    ours_state, ref_state = ours.state_dict(), reference.state_dict()
    assert all(ours_state[k].dtype == v.dtype and torch.equal(ours_state[k], v) for k, v in ref_state.items())
    assert torch.equal(run_dit(ours), run_dit(reference))


def test_vae_component(shim_layouts):
    AutoencoderKLLTXVideo = diffusers_class("AutoencoderKLLTXVideo")
    path = shim_layouts["ltx_single"]
    ours = load_component(path, "vae", AutoencoderKLLTXVideo)
    reference = ltx_reference(path, "vae", AutoencoderKLLTXVideo, "vae.")
    video = torch.randn(1, 3, 5, 16, 16)
    with torch.no_grad():
        assert torch.equal(ours.encode(video).latent_dist.mode(), reference.encode(video).latent_dist.mode())


def test_text_encoder_from_repo_subfolder(shim_layouts):
    repo = shim_layouts["pixart_repo"]
    encoder, tokenizer = load_text_encoder(repo)
    reference = T5EncoderModel.from_pretrained(repo, subfolder="text_encoder")
    assert type(encoder) is T5EncoderModel
    ids = tokenizer(["a red cat"], return_tensors="pt").input_ids
    assert ids.tolist() == AutoTokenizer.from_pretrained(repo, subfolder="tokenizer")(["a red cat"]).input_ids
    for tensor in reference.parameters():
        tensor.data = tensor.data.clone()
    with torch.no_grad():
        assert torch.equal(encoder(ids).last_hidden_state, reference(ids).last_hidden_state)


def test_missing_config_and_component_are_typed_errors(shim_layouts, tmp_path):
    with pytest.raises(CorruptCheckpointError, match="'config'"):
        read_single_file(shim_layouts["ltx_no_config"])
    only_dit = tmp_path / "only-dit.safetensors"
    state = {k: v for k, v in load_file(shim_layouts["ltx_single"]).items() if not k.startswith("vae.")}
    with safe_open(shim_layouts["ltx_single"], "pt") as f:
        metadata = f.metadata()
    save_file(state, only_dit, metadata=metadata)
    with pytest.raises(CorruptCheckpointError, match="no vae weights"):
        read_single_file(only_dit).vae_state_dict()


def test_weights_that_do_not_fit_the_class(shim_layouts):
    with pytest.raises(CorruptCheckpointError):
        load_component(shim_layouts["ltx_single"], "transformer", diffusers_class("AutoencoderKLLTXVideo"))


def test_bare_file_name_is_looked_up_in_the_ltx_repo(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError):
        read_single_file("ltxv-absent.safetensors", cache_dir=tmp_path / "cache", local_files_only=True)


def test_options_are_honoured_or_refused(shim_layouts, tmp_path):
    LTXVideoTransformer3DModel = diffusers_class("LTXVideoTransformer3DModel")
    with pytest.raises(UnsafeCheckpointError, match="trust_remote_code"):
        create_ltx_video_pipeline(shim_layouts["ltx_single"], "bfloat16", "PixArt", enhance_prompt=True)
    with pytest.raises(TypeError, match="revision"):
        create_transformer(tmp_path, "bfloat16", model_class=LTXVideoTransformer3DModel, revision="main")
    with pytest.raises(TypeError, match="nonsense"):
        create_transformer(
            shim_layouts["ltx_single"], "bfloat16", model_class=LTXVideoTransformer3DModel, nonsense=1
        )
    with pytest.raises(ValueError, match="Q8-Kernels"):  # LTX-Video's own error type, not ImportError
        create_transformer(
            shim_layouts["ltx_single"], "float8_e4m3fn", model_class=LTXVideoTransformer3DModel
        )
