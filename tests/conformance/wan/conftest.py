"""Tiny Wan checkpoint directories in the release layout, built with Wan's own classes.

``models_t5_umt5-xxl-enc-bf16.pth`` (UMT5 encoder, Wan's native names: ``token_embedding.weight``,
``blocks.0.attn.q.weight``...), ``google/umt5-xxl/`` (tokenizer), ``Wan2.1_VAE.pth`` /
``Wan2.2_VAE.pth`` (``encoder.conv1.weight``...), and the DiT as diffusers-style ``config.json`` +
``diffusion_pytorch_model*.safetensors`` in the root (Wan2.1, TI2V-5B) or ``low_noise_model/`` and
``high_noise_model/`` (Wan2.2 A14B). The architectures are Wan's, shrunk by the ``tiny_wan`` fixture
(the same for the upstream loader and the shim): UMT5 and the 2.1 VAE have hard-coded sizes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tests import _models
from tests.conformance._upstream import cpu_attention, import_upstream

import_upstream()

import wan.modules.animate.clip as wan_clip  # noqa: E402  # isort: skip
import wan.modules.animate.face_blocks as wan_face_blocks  # noqa: E402  # isort: skip
import wan.modules.animate.model_animate as wan_animate  # noqa: E402  # isort: skip
import wan.modules.model as wan_model  # noqa: E402  # isort: skip
import wan.modules.s2v.model_s2v as wan_s2v  # noqa: E402  # isort: skip
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
TINY_CLIP = {
    "embed_dim": 8,
    "image_size": 28,
    "patch_size": 14,
    "vision_dim": 16,
    "vision_mlp_ratio": 2,
    "vision_heads": 2,
    "vision_layers": 3,
    "vocab_size": 64,
    "max_text_len": 10,
    "text_dim": 16,
    "text_heads": 2,
    "text_layers": 1,
}
CLIP_CHECKPOINT = "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth"
CLIP_TOKENIZER = "xlm-roberta-large"
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

#: Wan2.2-S2V-14B's transformer config (wan/configs/wan_s2v_14B.py: frame packing, AdaIN), shrunk
TINY_S2V = {
    **{k: v for k, v in TINY_DIT.items() if k != "model_type"},
    "model_type": "s2v",
    "in_dim": 16,  # its frame packer takes the 2.1 VAE's 16 latent channels
    "out_dim": 16,
    "cond_dim": 16,
    "audio_dim": 8,
    "num_audio_token": 2,
    "enable_adain": True,
    "adain_mode": "attn_norm",
    "audio_inject_layers": [0, 1],
    "zero_init": True,
    "zero_timestep": True,
    "enable_motioner": False,
    "add_last_motion": True,
    "enable_tsm": False,
    "enable_framepack": True,
    "framepack_drop_mode": "padd",
}
#: Wan2.2-Animate-14B's transformer, shrunk (its motion encoder and image projection have fixed sizes)
TINY_ANIMATE = {
    "patch_size": (1, 2, 2),
    "text_len": 8,
    "in_dim": 8,
    "dim": 16,
    "ffn_dim": 32,
    "freq_dim": 16,
    "out_dim": 4,
    "num_heads": 2,
    "num_layers": 5,  # a face adapter every 5 blocks
}


def tiny_umt5_xxl(**kwargs):
    return wan_t5._t5("umt5-xxl", **{**TINY_UMT5, **kwargs})


def tiny_clip(**kwargs):
    return _clip_xlm_roberta_vit_h_14(**{**kwargs, **TINY_CLIP})


_clip_xlm_roberta_vit_h_14 = wan_clip.clip_xlm_roberta_vit_h_14


class _Transform:
    """What a torchvision transform is built with (torchvision is stubbed: its wheel links CUDA torch)."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __eq__(self, other):
        return type(self) is type(other) and (self.args, self.kwargs) == (other.args, other.kwargs)


class TransformRecords:
    """``torchvision.transforms`` as Wan's CLIP builder uses it (``Compose`` keeps ``.transforms``)."""

    class Compose(_Transform):
        def __init__(self, transforms):
            super().__init__(transforms)
            self.transforms = transforms

    class Resize(_Transform):
        pass

    class ToTensor(_Transform):
        pass

    class Normalize(_Transform):
        pass

    class InterpolationMode:
        BICUBIC = "bicubic"


def face_attention():
    """``flash_attn_func(q, k, v)`` ([batch, seq, heads, dim]) of Wan-Animate's face blocks, as SDPA."""

    def flash_attn_func(q, k, v):
        return F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        ).transpose(1, 2)

    return flash_attn_func


def clip_attention():
    """Wan's SDPA fallback for the CLIP's ``flash_attention(q, k, v, dropout_p=, causal=, version=2)``."""
    attention = cpu_attention()

    def flash_attention(q, k, v, version=None, **kwargs):
        return attention(q, k, v, **kwargs)

    return flash_attention


class TinyWanVAE21(wan_vae2_1.WanVAE_):
    def __init__(self, **cfg):
        super().__init__(**{**cfg, "dim": 8})


@pytest.fixture
def tiny_wan(monkeypatch):
    """Wan's UMT5, CLIP and 2.1 VAE at tiny sizes, and its attention kernels on CPU, for upstream and shim alike.

    The CUDA-only kernels (``flash_attention``, Wan-Animate's ``flash_attn_func``) are replaced by
    Wan's own scaled-dot-product fallback or SDPA; ``torchvision.transforms`` in the CLIP module by
    :class:`TransformRecords` (the transforms are built, never run, when loading).
    """
    monkeypatch.setattr(wan_t5, "umt5_xxl", tiny_umt5_xxl)
    monkeypatch.setattr(wan_vae2_1, "WanVAE_", TinyWanVAE21)
    monkeypatch.setattr(wan_model, "flash_attention", cpu_attention())
    monkeypatch.setattr(wan_face_blocks, "flash_attn_func", face_attention())
    monkeypatch.setattr(wan_clip, "clip_xlm_roberta_vit_h_14", tiny_clip)
    monkeypatch.setattr(wan_clip, "T", TransformRecords)
    monkeypatch.setattr(wan_clip, "flash_attention", clip_attention())


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
    # the CLIP image encoder of Wan2.1 i2v / flf2v and Wan2.2 animate, stored in float16 as released
    clip = _clip_xlm_roberta_vit_h_14(**TINY_CLIP)
    torch.save({k: v.half() for k, v in randomized(clip, 5).items()}, out["wan21"] / CLIP_CHECKPOINT)
    tokenizer.save_pretrained(out["wan21"] / CLIP_TOKENIZER)
    _dit(2).save_pretrained(out["wan21"], max_shard_size="20KB")
    # Wan2.2-S2V-14B and Wan2.2-Animate-14B: their DiT in the root, as the T2V DiT
    for name, cls, config, seed in [
        ("s2v", wan_s2v.WanModel_S2V, TINY_S2V, 6),
        ("animate", wan_animate.WanAnimateModel, TINY_ANIMATE, 7),
    ]:
        model = cls(**config)
        model.load_state_dict(randomized(model, seed))
        out[name] = root / f"Wan2.2-{name}-tiny"
        model.to(torch.bfloat16).save_pretrained(out[name], max_shard_size="2MB")
    # Wan2.2-S2V-14B ships the UMT5 encoder and the 2.1 VAE beside its DiT (Live Avatar loads them from there)
    for name in ("models_t5_umt5-xxl-enc-bf16.pth", "Wan2.1_VAE.pth", "google"):
        source, target = out["wan21"] / name, out["s2v"] / name
        shutil.copytree(source, target) if source.is_dir() else shutil.copyfile(source, target)
    _dit(3).save_pretrained(out["wan22"] / "low_noise_model")
    _dit(4).save_pretrained(out["wan22"] / "high_noise_model", max_shard_size="20KB")
    return out
