"""Tiny Wan checkpoint directories in the release layout, built with Wan's own classes.

``models_t5_umt5-xxl-enc-bf16.pth`` (UMT5 encoder, Wan's native names: ``token_embedding.weight``,
``blocks.0.attn.q.weight``...), ``google/umt5-xxl/`` (tokenizer), ``Wan2.1_VAE.pth`` /
``Wan2.2_VAE.pth`` (``encoder.conv1.weight``...), and the DiT as diffusers-style ``config.json`` +
``diffusion_pytorch_model*.safetensors`` in the root (Wan2.1, TI2V-5B) or ``low_noise_model/`` and
``high_noise_model/`` (Wan2.2 A14B). The architectures are Wan's, shrunk by the ``tiny_wan`` fixture
(the same for the upstream loader and the shim): UMT5 and the 2.1 VAE have hard-coded sizes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests import _models
from tests.conformance._upstream import cpu_attention, import_upstream

import_upstream()

import wan.modules.model as wan_model  # noqa: E402  # isort: skip
import wan.modules.t5 as wan_t5  # noqa: E402  # isort: skip
import wan.modules.vae2_1 as wan_vae2_1  # noqa: E402  # isort: skip
import wan.modules.vae2_2 as wan_vae2_2  # noqa: E402  # isort: skip

TINY_UMT5 = {
    "vocab_size": 64,
    "dim": 16,
    "dim_attn": 16,
    "dim_ffn": 32,
    "num_heads": 2,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "num_buckets": 8,
    "shared_pos": False,
    "dropout": 0.0,
}
TINY_DIT = {
    "model_type": "t2v",
    "patch_size": (1, 2, 2),
    "text_len": 8,
    "in_dim": 4,
    "dim": 16,
    "ffn_dim": 32,
    "freq_dim": 16,
    "text_dim": 4096,  # not saved in config.json (ignore_for_config): always the default
    "out_dim": 4,
    "num_heads": 2,
    "num_layers": 2,
}


def tiny_umt5_xxl(**kwargs):
    return wan_t5._t5("umt5-xxl", **{**TINY_UMT5, **kwargs})


class TinyWanVAE21(wan_vae2_1.WanVAE_):
    def __init__(self, **cfg):
        super().__init__(**{**cfg, "dim": 8})


@pytest.fixture
def tiny_wan(monkeypatch):
    """Wan's UMT5 and 2.1 VAE at tiny sizes, and its DiT attention on CPU, for upstream and shim alike."""
    monkeypatch.setattr(wan_t5, "umt5_xxl", tiny_umt5_xxl)
    monkeypatch.setattr(wan_vae2_1, "WanVAE_", TinyWanVAE21)
    monkeypatch.setattr(wan_model, "flash_attention", cpu_attention())


def randomized(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(v.shape, generator=generator).to(v.dtype) * 0.1 if v.is_floating_point() else v.clone()
        for k, v in module.state_dict().items()
    }


def _dit(seed: int) -> torch.nn.Module:
    model = wan_model.WanModel(**TINY_DIT)
    model.load_state_dict(randomized(model, seed))
    return model.to(torch.bfloat16)


def _vaes() -> tuple[torch.nn.Module, torch.nn.Module]:
    common = {"dim": 8, "dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [], "dropout": 0.0}
    return (
        wan_vae2_1.WanVAE_(z_dim=16, temperal_downsample=[False, True, True], **common),
        wan_vae2_2.WanVAE_(z_dim=48, temperal_downsample=[False, True, True], **common),
    )


@pytest.fixture(scope="session")
def wan_release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("wan-release")
    umt5 = wan_t5._t5("umt5-xxl", encoder_only=True, **{k: v for k, v in TINY_UMT5.items()})
    umt5_state = {k: v.to(torch.bfloat16) for k, v in randomized(umt5, 0).items()}
    with torch.device("meta"):  # only the shapes are needed (the 2.2 VAE's init takes seconds)
        vae21, vae22 = _vaes()
    tokenizer = _models.build_tokenizer()
    out = {"wan21": root / "Wan2.1-T2V-tiny", "wan22": root / "Wan2.2-T2V-A14B-tiny"}
    for name, vae_name, vae in [("wan21", "Wan2.1_VAE.pth", vae21), ("wan22", "Wan2.2_VAE.pth", vae22)]:
        out[name].mkdir()
        torch.save(umt5_state, out[name] / "models_t5_umt5-xxl-enc-bf16.pth")
        tokenizer.save_pretrained(out[name] / "google" / "umt5-xxl")
        torch.save(randomized(vae, 1), out[name] / vae_name)
    _dit(2).save_pretrained(out["wan21"], max_shard_size="20KB")
    _dit(3).save_pretrained(out["wan22"] / "low_noise_model")
    _dit(4).save_pretrained(out["wan22"] / "high_noise_model", max_shard_size="20KB")
    return out
