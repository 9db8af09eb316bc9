"""Wan's DiT (``WanModel.from_pretrained``) built on meta and filled through ckptkit."""

from __future__ import annotations

import inspect
import os
from typing import Any

import torch

from ckptkit.adapters._build import PLANNED_DEVICE_MAPS
from ckptkit.adapters._diffusers import load_diffusers_model
from ckptkit.shims.wan._checkpoint import WanCheckpoint, _wan, wan_checkpoint

__all__ = ["load_dit"]


def _device_map(device_map: object) -> object:
    """``device_map`` checked up front: a device (string, index, ``torch.device``), a planned map name or a dict."""
    if device_map is None or isinstance(device_map, (int, torch.device, dict)):
        return device_map
    if isinstance(device_map, str):
        if device_map in PLANNED_DEVICE_MAPS:
            return device_map
        try:
            torch.device(device_map)
        except RuntimeError:
            raise ValueError(
                f"device_map={device_map!r} is neither a device ('cpu', 'cuda:0', ...) nor one of "
                f"{', '.join(map(repr, PLANNED_DEVICE_MAPS))}"
            ) from None
        return device_map
    raise TypeError(
        f"device_map must be a device, a device map dict or a map name, not {type(device_map).__name__}"
    )


def load_dit(
    checkpoint_dir: str | os.PathLike[str] | WanCheckpoint,
    model_class: type | None = None,
    *,
    subfolder: str | None = None,
    torch_dtype: torch.dtype | str | None = None,
    device_map: object = None,
    device: str | torch.device | None = None,
    **config_overrides: Any,
) -> torch.nn.Module:
    """``WanModel.from_pretrained(checkpoint_dir, subfolder=..., torch_dtype=..., device_map=...)``.

    As diffusers' ``from_pretrained`` does for Wan's ``WanModel``: float32 unless ``torch_dtype`` is
    given, placed by ``device_map``. The model is built on the meta device from ``config.json`` and
    each tensor is read straight at its target dtype (the class's ``_keep_in_fp32_modules`` at
    float32), so host memory never holds two copies.

    Args:
        checkpoint_dir: the Wan ``ckpt_dir`` (or what :func:`wan_checkpoint` returned).
        model_class: default Wan's ``wan.modules.model.WanModel``; diffusers' ``WanTransformer3DModel``
            for ``-Diffusers`` repos, or Wan's ``WanModel_S2V`` / ``WanAnimateModel``.
        subfolder: ``None`` (root), ``"low_noise_model"`` or ``"high_noise_model"``.
        torch_dtype: the dtype of the weights in memory (default float32, as Wan's call sites get).
        device_map: a device (``"cuda:0"``, ``0``, ``torch.device``), ``"auto"``/``"balanced"``/
            ``"sequential"`` or a module -> device dict.
        device: the same as a single-device ``device_map`` (give one of the two).
        config_overrides: passed to ``model_class.from_config`` (``model_class.__init__``'s parameters only).

    Returns:
        The model in eval mode.

    Raises:
        TypeError: a keyword that is neither an option here nor a config field of ``model_class``.
        ValueError: ``device_map`` names no device and no planned map.
        TypeError: both ``device`` and ``device_map``.

    Example:
        >>> low = load_dit("./Wan2.2-T2V-A14B", subfolder="low_noise_model")  # doctest: +SKIP
    """
    if device is not None:
        if device_map is not None:
            raise TypeError("load_dit() got both device= and device_map=; pass one")
        device_map = device
    device_map = _device_map(device_map)
    if model_class is None:
        model_class = _wan("wan.modules.model").WanModel
    accepted = inspect.signature(model_class.__init__).parameters  # type: ignore[misc]
    unknown = sorted(k for k in config_overrides if k not in accepted or k == "self")
    if unknown:
        raise TypeError(
            f"load_dit() got arguments that are neither its options nor {model_class.__name__} config "
            f"fields: {unknown}"
        )
    parts = checkpoint_dir if isinstance(checkpoint_dir, WanCheckpoint) else wan_checkpoint(checkpoint_dir)
    ckpt = parts.dit_checkpoint(subfolder)
    return load_diffusers_model(
        ckpt,
        component="transformer",
        classes=set(),
        accept=lambda name: True,
        what="DiT",
        subfolder=None,
        variant=None,
        variant_fallback="warn",
        torch_dtype=torch_dtype,
        dtype=None,
        device_map=device_map,
        hub={},
        config_overrides=config_overrides,
        model_class=model_class,
    )
