"""Tiny LTX-Video checkpoints in the release format, built with LTX-Video's own classes.

A release is one ``.safetensors`` file: ``model.diffusion_model.*`` (the transformer), ``vae.*``
(the VAE, with the latent statistics under ``vae.per_channel_statistics.*``) and a ``config`` JSON
in ``__metadata__`` with ``transformer``, ``vae`` and ``scheduler`` parts and
``allowed_inference_steps``. The text encoder repo is PixArt-like: ``text_encoder/`` + ``tokenizer/``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests import _models
from tests.conformance._upstream import import_upstream

import_upstream()

TRANSFORMER_CONFIG = {
    "_class_name": "Transformer3DModel",
    "num_attention_heads": 2,
    "attention_head_dim": 8,
    "in_channels": 8,
    "out_channels": 8,
    "num_layers": 1,
    "cross_attention_dim": 16,
    "caption_channels": 16,
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "adaptive_norm": "single_scale_shift",
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "qk_norm": "rms_norm",
    "standardization_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "positional_embedding_theta": 10000.0,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "timestep_scale_multiplier": 1000,
    "attention_type": "default",
    "use_tpu_flash_attention": False,
}
VAE_CONFIG = {
    "_class_name": "CausalVideoAutoencoder",
    "dims": 3,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 8,
    "encoder_blocks": [["res_x", {"num_layers": 1}], ["compress_all", {}]],
    "decoder_blocks": [["res_x", {"num_layers": 1}], ["compress_all", {}]],
    "patch_size": 4,
    "norm_layer": "pixel_norm",
    "latent_log_var": "uniform",
    "use_quant_conv": False,
    "causal_decoder": False,
    "timestep_conditioning": False,
    "encoder_base_channels": 8,
    "decoder_base_channels": 8,
    "spatial_padding_mode": "replicate",
}
SCHEDULER_CONFIG = {
    "_class_name": "RectifiedFlowScheduler",
    "num_train_timesteps": 1000,
    "shifting": "SD3",
    "base_resolution": None,
    "target_shift_terminal": 0.1,
    "sampler": "LinearQuadratic",
}


def randomized(model: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The model's state dict with every floating tensor random (no all-ones norms hiding a swap)."""
    generator = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(v.shape, generator=generator).to(v.dtype) if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }


def t5_tokenizer():
    """A tiny unigram ``T5Tokenizer`` (the class LTX-Video's pipeline loads), built offline."""
    from transformers import T5Tokenizer

    words = ["a", "red", "cat", "dog", "blue"]
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)] + [
        (f"\u2581{w}", -1.0) for w in words
    ]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def write_release(root: Path, transformer_config: dict, text_encoder=None) -> dict[str, Path]:
    """The release in ``root``: ``fp32`` and ``bf16`` single files and the ``text_encoder_repo``."""
    from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
    from ltx_video.models.transformers.transformer3d import Transformer3DModel

    transformer = randomized(Transformer3DModel.from_config(transformer_config), 0)
    vae = randomized(CausalVideoAutoencoder.from_config(dict(VAE_CONFIG)), 1)
    latent = VAE_CONFIG["latent_channels"]
    statistics = {
        "std-of-means": torch.rand(latent) + 0.5,
        "mean-of-means": torch.randn(latent),
        "mean-of-stds": torch.rand(latent),
        "channel": torch.arange(latent, dtype=torch.float32),
    }
    state = {f"model.diffusion_model.{k}": v for k, v in transformer.items()}
    state |= {f"vae.{k}": v for k, v in vae.items()}
    state |= {f"vae.per_channel_statistics.{k}": v for k, v in statistics.items()}
    config = {
        "transformer": transformer_config,
        "vae": VAE_CONFIG,
        "scheduler": SCHEDULER_CONFIG,
        "allowed_inference_steps": [1.0, 0.9, 0.5],
    }
    out = {"fp32": root / "ltxv-tiny.safetensors", "bf16": root / "ltxv-tiny-bf16.safetensors"}
    save_file(state, out["fp32"], metadata={"config": json.dumps(config)})
    save_file(
        {k: v.to(torch.bfloat16) for k, v in state.items()},
        out["bf16"],
        metadata={"config": json.dumps(config)},
    )

    # the text encoder repo LTX-Video's pipeline reads (PixArt-XL-2-1024-MS's layout)
    out["text_encoder_repo"] = repo = root / "PixArt-tiny"
    (text_encoder or _models.build_t5()).save_pretrained(repo / "text_encoder")
    t5_tokenizer().save_pretrained(repo / "tokenizer")
    return out


@pytest.fixture(scope="session")
def ltx_release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_release(tmp_path_factory.mktemp("ltx-release"), TRANSFORMER_CONFIG)


#: The spatial upscaler's config (its safetensors metadata ``config``); GroupNorm needs 32 | mid_channels.
UPSAMPLER_CONFIG = {
    "_class_name": "LatentUpsampler",
    "in_channels": 8,
    "mid_channels": 32,
    "num_blocks_per_stage": 1,
    "dims": 3,
    "spatial_upsample": True,
    "temporal_upsample": False,
}


def inverse_renames(native: list[str], renames: dict[str, str]) -> dict[str, str]:
    """For each native key a stored (diffusers) key that LTX-Video's own renaming turns into it.

    The renaming is sequential ``str.replace`` over the table; candidates are built by undoing
    rules, and only one that LTX-Video's loop (run here) maps back to the native key is kept.
    """

    def forward(key: str) -> str:
        for old, new in renames.items():
            key = key.replace(old, new)
        return key

    stored = {}
    for key in native:
        candidates = {key}
        for _ in range(3):
            candidates |= {
                c.replace(new, old) for c in candidates for old, new in renames.items() if new in c
            }
        found = sorted(c for c in candidates if forward(c) == key)
        assert found, f"no stored name maps to {key}"
        stored[key] = found[0]
    return stored


@pytest.fixture(scope="session")
def ltx_upsampler(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The spatial upscaler as LTX-Video ships it: one .safetensors, its config in the metadata."""
    from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler

    root = tmp_path_factory.mktemp("ltx-upsampler")
    state = randomized(LatentUpsampler.from_config(UPSAMPLER_CONFIG), 11)
    out = {
        "fp32": root / "ltxv-spatial-upscaler-tiny.safetensors",
        "bf16": root / "upscaler-bf16.safetensors",
    }
    save_file(state, out["fp32"], metadata={"config": json.dumps(UPSAMPLER_CONFIG)})
    save_file(
        {k: v.to(torch.bfloat16) for k, v in state.items()},
        out["bf16"],
        metadata={"config": json.dumps(UPSAMPLER_CONFIG)},
    )
    return out


@pytest.fixture(scope="session")
def ltx_vae_release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The older VAE release layout: ``autoencoder.pth`` + ``config.json`` (+ ``per_channel_statistics.json``).

    The ``.pth`` holds native names, some in the legacy spelling ``.resnets.`` that LTX-Video's
    ``load_state_dict`` renames; the statistics JSON is a table as LTX-Video's tools write it.
    """
    from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder

    root = tmp_path_factory.mktemp("ltx-vae-release")
    state = randomized(CausalVideoAutoencoder.from_config(dict(VAE_CONFIG)), 21)
    legacy = {k.replace(".res_blocks.", ".resnets."): v for k, v in state.items()}
    assert legacy.keys() != state.keys()  # the legacy spelling is exercised
    latent = VAE_CONFIG["latent_channels"]
    generator = torch.Generator().manual_seed(22)
    columns = ["channel", "std-of-means", "mean-of-means", "mean-of-stds"]
    rows = [[float(c), *(torch.rand(3, generator=generator) + 0.25).tolist()] for c in range(latent)]
    out = {}
    for name, statistics in [("with-statistics", True), ("without-statistics", False)]:
        directory = root / name
        directory.mkdir()
        torch.save(legacy, directory / "autoencoder.pth")
        (directory / "config.json").write_text(json.dumps(VAE_CONFIG))
        if statistics:
            (directory / "per_channel_statistics.json").write_text(
                json.dumps({"columns": columns, "data": rows})
            )
        out[name] = directory
    return out
