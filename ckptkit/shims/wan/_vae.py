"""Wan's 2.1 and 2.2 VAEs (``_video_vae``, ``Wan2_1_VAE``, ``Wan2_2_VAE``), filled from their ``.pth``."""

from __future__ import annotations

import importlib
import inspect
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


#: What differs between Wan's two ``_video_vae`` functions: their positional parameters after
#: ``pretrained_path`` (with defaults) and the architecture defaults; the rest of the config is shared.
_VERSIONS: dict[str, tuple[tuple[tuple[str, Any], ...], dict[str, Any]]] = {
    "2.1": ((("z_dim", None), ("device", "cpu")), {"dim": 96, "temperal_downsample": [False, True, True]}),
    "2.2": (
        (("z_dim", 16), ("dim", 160), ("device", "cpu")),
        {"temperal_downsample": [True, True, True]},
    ),
}
_SHARED_CFG = {"dim_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_scales": [], "dropout": 0.0}


def _video_vae_in(module: Any, version: str) -> Callable[..., torch.nn.Module]:
    """``module._video_vae`` (Wan's ``vae2_1`` or ``vae2_2``), same signature, filled through ckptkit.

    Builds ``module.WanVAE_`` on meta from the version's config updated with the call's keywords,
    as Wan does, and assigns the ``.pth``'s tensors (``weights_only``; moved to ``device`` unless CPU).
    """
    positional, defaults = _VERSIONS[version]
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    signature = inspect.Signature(
        [
            inspect.Parameter("pretrained_path", keyword, default=None),
            *(inspect.Parameter(name, keyword, default=value) for name, value in positional),
            inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
        ]
    )

    def _video_vae(*args: Any, **kwargs: Any) -> torch.nn.Module:
        bound = signature.bind(*args, **kwargs)  # Wan's TypeErrors for a wrong call
        bound.apply_defaults()
        call = dict(bound.arguments)
        pretrained_path, device = call.pop("pretrained_path"), call.pop("device")
        cfg = {**_SHARED_CFG, **defaults, **call.pop("kwargs"), **call}
        with torch.device("meta"):
            model = module.WanVAE_(**cfg)
        state = _read_pth(pretrained_path, "_video_vae")
        if torch.device(device) != torch.device("cpu"):
            state = {k: v.to(device) for k, v in state.items()}
        _assign(model, state, pretrained_path)
        return model

    _video_vae.__signature__ = signature  # type: ignore[attr-defined]
    return _video_vae


def video_vae_2_1(
    pretrained_path: str | os.PathLike[str] | None = None,
    z_dim: int | None = None,
    device: Any = "cpu",
    **kwargs: Any,
) -> torch.nn.Module:
    """Wan's ``wan.modules.vae2_1._video_vae``: the 2.1 VAE built on meta, filled (``assign``) from the ``.pth``."""
    return _video_vae_in(_vae_module("2.1"), "2.1")(pretrained_path, z_dim, device, **kwargs)


def video_vae_2_2(
    pretrained_path: str | os.PathLike[str] | None = None,
    z_dim: int = 16,
    dim: int = 160,
    device: Any = "cpu",
    **kwargs: Any,
) -> torch.nn.Module:
    """Wan's ``wan.modules.vae2_2._video_vae``: the 2.2 VAE built on meta, filled (``assign``) from the ``.pth``."""
    return _video_vae_in(_vae_module("2.2"), "2.2")(pretrained_path, z_dim, dim, device, **kwargs)


def Wan2_1_VAE(*args: Any, **kwargs: Any) -> Any:
    """Wan's ``Wan2_1_VAE(z_dim=16, vae_pth=..., dtype=..., device=...)`` (Wan2.1's ``WanVAE``), read by ckptkit."""
    module = _vae_module("2.1")
    cls = getattr(module, "Wan2_1_VAE", None) or module.WanVAE
    with temporarily(module, "_video_vae", _video_vae_in(module, "2.1")):
        return cls(*args, **kwargs)


def Wan2_2_VAE(*args: Any, **kwargs: Any) -> Any:
    """Wan's ``Wan2_2_VAE(z_dim=48, c_dim=160, vae_pth=..., ...)``, its weights read by ckptkit."""
    module = _vae_module("2.2")
    with temporarily(module, "_video_vae", _video_vae_in(module, "2.2")):
        return module.Wan2_2_VAE(*args, **kwargs)


#: Wan2.1's name for the 2.1 VAE (``wan.modules.vae.WanVAE`` there; ``Wan2_1_VAE`` in Wan2.2).
WanVAE = Wan2_1_VAE
