"""Wan's 2.1 and 2.2 VAEs (``_video_vae``, ``Wan2_1_VAE``, ``Wan2_2_VAE``), filled from their ``.pth``."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

import torch

from ckptkit.shims._patch import temporarily
from ckptkit.shims.wan._checkpoint import _assign, _read_pth, _wan

__all__ = ["Wan2_1_VAE", "Wan2_2_VAE", "WanVAE", "video_vae_2_1", "video_vae_2_2"]


def _vae_module(version: str, package: str = "wan") -> Any:
    """The module of a VAE version: ``<package>.modules.vae2_1`` / ``vae2_2`` (Wan2.2), ``.vae`` (Wan2.1)."""
    if version == "2.2":
        return _wan(f"{package}.modules.vae2_2")
    try:
        return importlib.import_module(f"{package}.modules.vae2_1")
    except ImportError:
        return _wan(f"{package}.modules.vae")


def _video_vae(
    module: Any, pretrained_path: Any, device: Any, cfg: dict[str, Any], kwargs: dict[str, Any]
) -> torch.nn.Module:
    cfg.update(**kwargs)
    with torch.device("meta"):
        model = module.WanVAE_(**cfg)
    state = _read_pth(pretrained_path, "_video_vae")
    if torch.device(device) != torch.device("cpu"):
        state = {k: v.to(device) for k, v in state.items()}
    _assign(model, state, pretrained_path)
    return model


def _video_vae_2_1_in(module: Any) -> Callable[..., torch.nn.Module]:
    def _video_vae_2_1(
        pretrained_path: str | os.PathLike[str] | None = None,
        z_dim: int | None = None,
        device: Any = "cpu",
        **kwargs: Any,
    ) -> torch.nn.Module:
        cfg = {
            "dim": 96,
            "z_dim": z_dim,
            "dim_mult": [1, 2, 4, 4],
            "num_res_blocks": 2,
            "attn_scales": [],
            "temperal_downsample": [False, True, True],
            "dropout": 0.0,
        }
        return _video_vae(module, pretrained_path, device, cfg, kwargs)

    return _video_vae_2_1


def _video_vae_2_2_in(module: Any) -> Callable[..., torch.nn.Module]:
    def _video_vae_2_2(
        pretrained_path: str | os.PathLike[str] | None = None,
        z_dim: int = 16,
        dim: int = 160,
        device: Any = "cpu",
        **kwargs: Any,
    ) -> torch.nn.Module:
        cfg = {
            "dim": dim,
            "z_dim": z_dim,
            "dim_mult": [1, 2, 4, 4],
            "num_res_blocks": 2,
            "attn_scales": [],
            "temperal_downsample": [True, True, True],
            "dropout": 0.0,
        }
        return _video_vae(module, pretrained_path, device, cfg, kwargs)

    return _video_vae_2_2


def video_vae_2_1(
    pretrained_path: str | os.PathLike[str] | None = None,
    z_dim: int | None = None,
    device: Any = "cpu",
    **kwargs: Any,
) -> torch.nn.Module:
    """Wan's ``wan.modules.vae2_1._video_vae``: the 2.1 VAE built on meta, filled (``assign``) from the ``.pth``."""
    return _video_vae_2_1_in(_vae_module("2.1"))(pretrained_path, z_dim, device, **kwargs)


def video_vae_2_2(
    pretrained_path: str | os.PathLike[str] | None = None,
    z_dim: int = 16,
    dim: int = 160,
    device: Any = "cpu",
    **kwargs: Any,
) -> torch.nn.Module:
    """Wan's ``wan.modules.vae2_2._video_vae``: the 2.2 VAE built on meta, filled (``assign``) from the ``.pth``."""
    return _video_vae_2_2_in(_vae_module("2.2"))(pretrained_path, z_dim, dim, device, **kwargs)


def Wan2_1_VAE(*args: Any, **kwargs: Any) -> Any:
    """Wan's ``Wan2_1_VAE(z_dim=16, vae_pth=..., dtype=..., device=...)`` (Wan2.1's ``WanVAE``), read by ckptkit."""
    module = _vae_module("2.1")
    cls = getattr(module, "Wan2_1_VAE", None) or module.WanVAE
    with temporarily(module, "_video_vae", _video_vae_2_1_in(module)):
        return cls(*args, **kwargs)


def Wan2_2_VAE(*args: Any, **kwargs: Any) -> Any:
    """Wan's ``Wan2_2_VAE(z_dim=48, c_dim=160, vae_pth=..., ...)``, its weights read by ckptkit."""
    module = _vae_module("2.2")
    with temporarily(module, "_video_vae", _video_vae_2_2_in(module)):
        return module.Wan2_2_VAE(*args, **kwargs)


#: Wan2.1's name for the 2.1 VAE (``wan.modules.vae.WanVAE`` there; ``Wan2_1_VAE`` in Wan2.2).
WanVAE = Wan2_1_VAE
