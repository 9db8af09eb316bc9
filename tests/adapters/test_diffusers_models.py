from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL, PixArtTransformer2DModel

from ckptkit import CheckpointNotFoundError, CkptWarning, CorruptCheckpointError, VariantNotFoundError
from ckptkit.adapters import load_dit, load_vae
from tests._versions import diffusers_class
from tests.adapters._compare import assert_same_weights


def run(model) -> torch.Tensor:
    """A forward pass of any of the tiny models, deterministic."""
    torch.manual_seed(0)
    dtype = model.dtype
    with torch.no_grad():
        if isinstance(model, AutoencoderKL):
            return model.decode(
                model.encode(torch.randn(1, 3, 16, 16, dtype=dtype)).latent_dist.mode()
            ).sample
        name = type(model).__name__  # the video classes exist only in newer diffusers
        if name in ("AutoencoderKLWan", "AutoencoderKLLTXVideo"):
            video = torch.randn(1, 3, 5, 16, 16, dtype=dtype)
            return model.decode(model.encode(video).latent_dist.mode()).sample
        if isinstance(model, PixArtTransformer2DModel):
            return model(
                torch.randn(1, 4, 8, 8, dtype=dtype),
                encoder_hidden_states=torch.randn(1, 3, 32, dtype=dtype),
                timestep=torch.tensor([10]),
                added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            ).sample
        if name == "WanTransformer3DModel":
            return model(
                torch.randn(1, 4, 2, 8, 8, dtype=dtype),
                torch.tensor([10]),
                torch.randn(1, 5, 16, dtype=dtype),
            ).sample
        if name == "LTXVideoTransformer3DModel":
            return model(
                torch.randn(1, 2 * 4 * 4, 8, dtype=dtype),
                torch.randn(1, 5, 16, dtype=dtype),
                torch.tensor([10]),
                torch.ones(1, 5, dtype=torch.long),
                num_frames=2,
                height=4,
                width=4,
            ).sample
    raise AssertionError(type(model))


def assert_same_model(ours, reference) -> None:
    assert_same_weights(ours, reference)
    assert dict(ours.config) == dict(reference.config) or set(ours.config) == set(reference.config)
    assert torch.equal(run(ours), run(reference))


@pytest.mark.parametrize(
    ("load", "name", "cls", "kwargs"),
    [
        (load_vae, "vae_variants", AutoencoderKL, {}),
        (load_vae, "vae_variants", AutoencoderKL, {"variant": "fp16"}),
        (load_vae, "vae_legacy", AutoencoderKL, {"variant": "fp16"}),
        (load_vae, "vae_variants", AutoencoderKL, {"torch_dtype": torch.float16}),
        (load_dit, "pixart", PixArtTransformer2DModel, {}),
        (load_dit, "pixart", PixArtTransformer2DModel, {"variant": "fp16", "torch_dtype": torch.float16}),
    ],
)
def test_shared_layouts_equal_from_pretrained(layouts, load, name, cls, kwargs):
    assert_same_model(load(layouts[name], **kwargs), cls.from_pretrained(layouts[name], **kwargs))


@pytest.mark.parametrize(
    ("load", "name", "cls", "kwargs"),
    [
        (load_vae, "wan_vae", "AutoencoderKLWan", {}),
        (load_vae, "ltx_vae", "AutoencoderKLLTXVideo", {"variant": "fp16"}),
        (load_dit, "wan_dit", "WanTransformer3DModel", {}),
        (load_dit, "wan_dit", "WanTransformer3DModel", {"variant": "bf16", "torch_dtype": torch.bfloat16}),
        (load_dit, "wan_dit", "WanTransformer3DModel", {"torch_dtype": torch.bfloat16}),
        (load_dit, "ltx_dit", "LTXVideoTransformer3DModel", {}),
        (load_dit, "ltx_dit", "LTXVideoTransformer3DModel", {"torch_dtype": torch.bfloat16}),
    ],
)
def test_video_classes_equal_from_pretrained(more_layouts, load, name, cls, kwargs):
    cls = diffusers_class(cls)
    assert_same_model(load(more_layouts[name], **kwargs), cls.from_pretrained(more_layouts[name], **kwargs))


def test_wan_keeps_its_fp32_modules(more_layouts):
    ours = load_dit(more_layouts["wan_dit"], dtype="bf16")
    assert ours.scale_shift_table.dtype == torch.float32
    assert ours.condition_embedder.time_embedder.linear_1.weight.dtype == torch.float32
    assert ours.blocks[0].attn1.to_q.weight.dtype == torch.bfloat16


def test_legacy_transformer2d_name_is_pixart(more_layouts):
    ours = load_dit(more_layouts["pixart_legacy"])
    reference = PixArtTransformer2DModel.from_pretrained(more_layouts["pixart_legacy"])
    assert_same_model(ours, reference)


@pytest.mark.parametrize(
    ("load", "pipeline", "component", "cls"),
    [
        (load_vae, "pixart_pipeline", "vae", "AutoencoderKL"),
        (load_dit, "pixart_pipeline", "transformer", "PixArtTransformer2DModel"),
        (load_vae, "wan_pipeline", "vae", "AutoencoderKLWan"),
        (load_dit, "wan_pipeline", "transformer", "WanTransformer3DModel"),
    ],
)
def test_pipeline_picks_component(more_layouts, load, pipeline, component, cls):
    cls = diffusers_class(cls)
    ours = load(more_layouts[pipeline])
    assert_same_model(ours, cls.from_pretrained(more_layouts[pipeline], subfolder=component))


def test_fp16_only_vae_falls_back_with_warning(more_layouts):
    with pytest.warns(CkptWarning, match="only the 'fp16' variant"):
        ours = load_vae(more_layouts["ltx_vae"])
    reference = diffusers_class("AutoencoderKLLTXVideo").from_pretrained(
        more_layouts["ltx_vae"], variant="fp16"
    )
    assert_same_model(ours, reference)


def test_missing_variant_falls_back_cast(layouts):
    with pytest.warns(CkptWarning, match="variant 'fp16' was requested"):
        ours = load_dit(layouts["pipeline"], subfolder="transformer", variant="fp16")
    reference = PixArtTransformer2DModel.from_pretrained(
        layouts["pipeline"],
        subfolder="transformer",
        torch_dtype=torch.float16,  # every diffusers; dtype= only newer
    )
    assert_same_model(ours, reference)
    with pytest.raises(VariantNotFoundError):
        load_dit(layouts["pipeline"], subfolder="transformer", variant="fp16", variant_fallback="error")


def test_config_overrides_pass_through(layouts):
    ours = load_vae(layouts["vae_variants"], scaling_factor=0.5)
    assert ours.config.scaling_factor == 0.5


def test_wrong_component_is_a_typed_error(layouts, more_layouts):
    with pytest.raises(CorruptCheckpointError, match="not the transformer"):
        load_dit(layouts["vae_variants"])
    with pytest.raises(CorruptCheckpointError, match="not the autoencoder"):
        load_vae(layouts["pixart"])


def test_pipeline_without_the_component(layout_copy):
    directory = layout_copy("pipeline")
    index = json.loads((directory / "model_index.json").read_text())
    del index["vae"]
    (directory / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointNotFoundError, match="no 'vae' component"):
        load_vae(directory)


def test_missing_config(layout_copy):
    directory = layout_copy("vae_variants")
    (directory / "config.json").unlink()
    with pytest.raises(CheckpointNotFoundError, match=r"config\.json"):
        load_vae(directory)
