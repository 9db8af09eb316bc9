"""ckptkit.shims.ltx against LTX-Video 0.1.2's own loaders, on the same release-format files."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from ckptkit import UnsafeCheckpointError
from ckptkit.shims import ltx as shim
from ckptkit.shims.ltx import _install as shim_install
from tests.conformance.ltx.conftest import TRANSFORMER_CONFIG, randomized

import ltx_video.inference as upstream  # isort: skip
from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder  # isort: skip
from ltx_video.models.autoencoders.vae_encode import normalize_latents  # isort: skip
from ltx_video.models.transformers.transformer3d import Transformer3DModel  # isort: skip
from ltx_video.schedulers.rf import RectifiedFlowScheduler  # isort: skip
from ltx_video.utils import diffusers_config_mapping  # isort: skip


def assert_same_module(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Same class, mode, and every parameter and buffer equal in name, dtype, device and value."""
    assert type(ours) is type(theirs)
    assert ours.training == theirs.training
    for kind in ("named_parameters", "named_buffers"):
        mine, upstream_ = dict(getattr(ours, kind)()), dict(getattr(theirs, kind)())
        assert mine.keys() == upstream_.keys(), kind
        for name, tensor in upstream_.items():
            assert mine[name].dtype == tensor.dtype, name
            assert mine[name].device == tensor.device, name
            assert torch.equal(mine[name], tensor), name


def run_transformer(model: torch.nn.Module) -> torch.Tensor:
    # on a fresh copy: the kernels' results depend on the alignment of the weights in memory
    # (mapped from the file or copied), and the values are already compared tensor by tensor
    model = copy.deepcopy(model)
    torch.manual_seed(0)
    dtype = next(model.parameters()).dtype
    tokens = 2 * 2 * 2
    grid = torch.stack(torch.meshgrid(torch.arange(2.0), torch.arange(2.0), torch.arange(2.0), indexing="ij"))
    with torch.no_grad():
        return model(
            torch.randn(1, tokens, 8, dtype=dtype),
            grid.reshape(1, 3, tokens),
            encoder_hidden_states=torch.randn(1, 4, 16, dtype=dtype),
            timestep=torch.tensor([[0.5]]),
            return_dict=False,
        )[0]


@pytest.mark.parametrize("precision", ["bfloat16", "float32"])
@pytest.mark.parametrize("file", ["fp32", "bf16"])
def test_create_transformer_single_file(ltx_release, precision, file):
    path = str(ltx_release[file])
    ours, theirs = shim.create_transformer(path, precision), upstream.create_transformer(path, precision)
    assert_same_module(ours, theirs)
    assert torch.equal(run_transformer(ours), run_transformer(theirs))


def test_create_transformer_diffusers_directory(ltx_release, tmp_path, monkeypatch):
    # LTX-Video maps only Lightricks/LTX-Video's diffusers configs to its own: add the tiny one to
    # its table, and write the weights under diffusers' names (its rename table, inverted).
    diffusers_config = {"_class_name": "LTXVideoTransformer3DModel", "num_layers": 1, "tiny": True}
    mapping = diffusers_config_mapping.diffusers_and_ours_config_mapping
    monkeypatch.setitem(
        mapping, diffusers_config_mapping.make_hashable_key(diffusers_config), TRANSFORMER_CONFIG
    )
    state = randomized(Transformer3DModel.from_config(TRANSFORMER_CONFIG), 5)
    renamed = {}
    for key, tensor in state.items():
        for diffusers_name, ours_name in diffusers_config_mapping.TRANSFORMER_KEYS_RENAME_DICT.items():
            key = key.replace(ours_name, diffusers_name)
        renamed[key] = tensor
    (tmp_path / "transformer").mkdir()
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(diffusers_config))
    names = sorted(renamed)
    save_file(
        {k: renamed[k] for k in names[::2]},
        tmp_path / "transformer" / "diffusion_pytorch_model-00001-of-00002.safetensors",
    )
    save_file(
        {k: renamed[k] for k in names[1::2]},
        tmp_path / "transformer" / "diffusion_pytorch_model-00002-of-00002.safetensors",
    )
    index = {
        "metadata": {},
        "weight_map": {
            k: f"diffusion_pytorch_model-0000{1 + i % 2}-of-00002.safetensors" for i, k in enumerate(names)
        },
    }
    (tmp_path / "transformer" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps(index)
    )

    ours, theirs = (
        shim.create_transformer(str(tmp_path), "float32"),
        upstream.create_transformer(str(tmp_path), "float32"),
    )
    assert_same_module(ours, theirs)
    assert torch.equal(run_transformer(ours), run_transformer(theirs))


def test_fp8_without_q8_kernels_is_the_same_value_error(ltx_release):
    with pytest.raises(ValueError, match="Q8-Kernels") as theirs:
        upstream.create_transformer(str(ltx_release["fp32"]), "float8_e4m3fn")
    with pytest.raises(ValueError, match="Q8-Kernels") as ours:
        shim.create_transformer(str(ltx_release["fp32"]), "float8_e4m3fn")
    assert type(ours.value) is type(theirs.value)


@pytest.mark.parametrize("torch_dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("file", ["fp32", "bf16"])
def test_vae_registers_the_latent_statistics(ltx_release, file, torch_dtype):
    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    theirs = CausalVideoAutoencoder.from_pretrained(ltx_release[file], **kwargs)
    ours = shim.load_vae(ltx_release[file], **kwargs)
    assert_same_module(ours, theirs)
    # the statistics the pipeline normalizes with (vae_per_channel_normalize=True is its default)
    assert {"std_of_means", "mean_of_means"} <= dict(ours.named_buffers()).keys()
    video = torch.randn(1, 3, 9, 32, 32, dtype=next(ours.parameters()).dtype)
    with torch.no_grad():
        latents = [vae.encode(video).latent_dist.mode() for vae in (ours, theirs)]
        normalized = [
            normalize_latents(z, vae, vae_per_channel_normalize=True)
            for z, vae in zip(latents, (ours, theirs), strict=True)
        ]
    assert torch.equal(latents[0], latents[1])
    assert torch.equal(normalized[0], normalized[1])


def test_scheduler_from_the_embedded_config(ltx_release):
    ours = shim.load_scheduler(ltx_release["fp32"])
    theirs = RectifiedFlowScheduler.from_pretrained(ltx_release["fp32"])
    assert type(ours) is type(theirs)
    assert dict(ours.config) == dict(theirs.config)


def assert_same_pipeline(ours, theirs) -> None:
    for name in ("transformer", "vae", "text_encoder"):
        assert_same_module(getattr(ours, name), getattr(theirs, name))
    assert type(ours.tokenizer) is type(theirs.tokenizer)
    assert ours.tokenizer(["a red cat"]).input_ids == theirs.tokenizer(["a red cat"]).input_ids
    assert dict(ours.scheduler.config) == dict(theirs.scheduler.config)
    assert ours.allowed_inference_steps == theirs.allowed_inference_steps
    ids = theirs.tokenizer(["a red cat"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(
            copy.deepcopy(ours.text_encoder)(ids)[0], copy.deepcopy(theirs.text_encoder)(ids)[0]
        )
    assert torch.equal(run_transformer(ours.transformer), run_transformer(theirs.transformer))


@pytest.mark.parametrize("sampler", [None, "uniform"])
def test_create_ltx_video_pipeline(ltx_release, sampler):
    args = (str(ltx_release["fp32"]), "bfloat16", str(ltx_release["text_encoder_repo"]), sampler, "cpu")
    assert_same_pipeline(shim.create_ltx_video_pipeline(*args), upstream.create_ltx_video_pipeline(*args))


def test_prompt_enhancer_is_refused(ltx_release):
    with pytest.raises(UnsafeCheckpointError, match="trust_remote_code"):
        shim.create_ltx_video_pipeline(
            str(ltx_release["fp32"]), "bfloat16", str(ltx_release["text_encoder_repo"]), enhance_prompt=True
        )


def test_install_runs_ltx_videos_own_code_on_ckptkit(ltx_release):
    originals = {
        "create_transformer": upstream.create_transformer,
        "create_ltx_video_pipeline": upstream.create_ltx_video_pipeline,
        "transformer": vars(Transformer3DModel)["from_pretrained"],
        "vae": vars(CausalVideoAutoencoder)["from_pretrained"],
        "scheduler": vars(RectifiedFlowScheduler)["from_pretrained"],
    }
    args = (str(ltx_release["bf16"]), "bfloat16", str(ltx_release["text_encoder_repo"]), None, "cpu")
    reference = upstream.create_ltx_video_pipeline(*args)
    with shim.installed():
        assert upstream.create_transformer is shim.create_transformer
        assert upstream.create_ltx_video_pipeline is shim.create_ltx_video_pipeline
        assert Transformer3DModel.from_pretrained.__func__ is shim_install._transformer_from_pretrained
        assert CausalVideoAutoencoder.from_pretrained.__func__ is shim_install._vae_from_pretrained
        assert RectifiedFlowScheduler.from_pretrained is shim.load_scheduler
        assert_same_pipeline(upstream.create_ltx_video_pipeline(*args), reference)
        # the classes' own entry points, as LTX-Video's code calls them
        assert_same_module(
            CausalVideoAutoencoder.from_pretrained(ltx_release["bf16"]),
            originals["vae"].__func__(CausalVideoAutoencoder, ltx_release["bf16"]),
        )
        with pytest.raises(TypeError, match="revision"):
            Transformer3DModel.from_pretrained(ltx_release["bf16"], revision="main")
        with pytest.raises(TypeError, match="low_cpu_mem_usage"):
            CausalVideoAutoencoder.from_pretrained(ltx_release["bf16"], low_cpu_mem_usage=True)
    assert upstream.create_transformer is originals["create_transformer"]
    assert upstream.create_ltx_video_pipeline is originals["create_ltx_video_pipeline"]
    assert vars(Transformer3DModel)["from_pretrained"] is originals["transformer"]
    assert vars(CausalVideoAutoencoder)["from_pretrained"] is originals["vae"]
    assert vars(RectifiedFlowScheduler)["from_pretrained"] is originals["scheduler"]
