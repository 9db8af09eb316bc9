from __future__ import annotations

import pytest

from ckptkit.format.naming import (
    index_filename,
    parse_index_filename,
    parse_weight_filename,
    weights_filename,
)


@pytest.mark.parametrize(
    ("name", "stem", "variant", "shard", "scheme"),
    [
        ("model.safetensors", "model", None, None, "current"),
        ("model-00001-of-00003.safetensors", "model", None, (1, 3), "current"),
        ("model.fp16-00002-of-00003.safetensors", "model", "fp16", (2, 3), "current"),
        (
            "diffusion_pytorch_model-00001-of-00002.fp16.safetensors",
            "diffusion_pytorch_model",
            "fp16",
            (1, 2),
            "legacy",
        ),
        ("diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model", "fp16", None, "current"),
        ("diffusion_pytorch_model.non_ema.bin", "diffusion_pytorch_model", "non_ema", None, "current"),
        ("pytorch_model-00001-of-00002.bin", "pytorch_model", None, (1, 2), "current"),
        ("Wan2.1_VAE.pth", "Wan2.1_VAE", None, None, "current"),
        ("ltx-video-2b-v0.9.safetensors", "ltx-video-2b-v0.9", None, None, "current"),
        ("models_t5_umt5-xxl-enc-bf16.pth", "models_t5_umt5-xxl-enc-bf16", None, None, "current"),
        ("unet.fp16.safetensors", "unet", "fp16", None, "current"),
    ],
)
def test_parse_weight_filename(name, stem, variant, shard, scheme) -> None:
    parsed = parse_weight_filename(name)
    assert parsed is not None
    assert (parsed.stem, parsed.variant, parsed.shard, parsed.scheme) == (stem, variant, shard, scheme)


@pytest.mark.parametrize(
    "name", ["config.json", "model.safetensors.index.json", "tokenizer.model", "README.md"]
)
def test_non_weight_files(name) -> None:
    assert parse_weight_filename(name) is None


@pytest.mark.parametrize(
    ("name", "stem", "ext", "variant", "scheme"),
    [
        ("model.safetensors.index.json", "model", "safetensors", None, "current"),
        ("model.safetensors.index.fp16.json", "model", "safetensors", "fp16", "current"),
        (
            "diffusion_pytorch_model.safetensors.fp16.index.json",
            "diffusion_pytorch_model",
            "safetensors",
            "fp16",
            "legacy",
        ),
        ("pytorch_model.bin.index.json", "pytorch_model", "bin", None, "current"),
    ],
)
def test_parse_index_filename(name, stem, ext, variant, scheme) -> None:
    parsed = parse_index_filename(name)
    assert parsed is not None
    assert (parsed.stem, parsed.ext, parsed.variant, parsed.scheme) == (stem, ext, variant, scheme)


def test_writing_uses_the_current_scheme_and_round_trips() -> None:
    name = weights_filename("diffusion_pytorch_model", variant="fp16", shard=(3, 12))
    assert name == "diffusion_pytorch_model.fp16-00003-of-00012.safetensors"
    parsed = parse_weight_filename(name)
    assert parsed is not None and parsed.shard == (3, 12) and parsed.scheme == "current"
    assert index_filename("model", variant="bf16") == "model.safetensors.index.bf16.json"
    assert index_filename("model") == "model.safetensors.index.json"
    assert weights_filename("model") == "model.safetensors"
