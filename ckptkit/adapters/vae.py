"""``load_vae``: a diffusers autoencoder, as ``AutoencoderKL.from_pretrained`` returns it."""

from __future__ import annotations

import os
from typing import Any

import torch

from ckptkit.adapters._diffusers import load_diffusers_model
from ckptkit.format.checkpoint import CheckpointDir

__all__ = ["load_vae"]

#: model_index.json class names that mark a pipeline's autoencoder.
VAE_CLASSES = {
    "AutoencoderKL",
    "AutoencoderKLLTXVideo",
    "AutoencoderKLWan",
    "AutoencoderKLTemporalDecoder",
    "AutoencoderKLCogVideoX",
    "AutoencoderKLHunyuanVideo",
    "AutoencoderKLMochi",
    "AutoencoderKLAllegro",
    "AutoencoderDC",
    "AutoencoderTiny",
    "AsymmetricAutoencoderKL",
    "ConsistencyDecoderVAE",
    "VQModel",
}


def _is_autoencoder(name: str) -> bool:
    return name in VAE_CLASSES or name.startswith("Autoencoder")


def load_vae(
    pretrained_model_name_or_path: str | os.PathLike[str] | CheckpointDir,
    *,
    subfolder: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    variant: str | None = None,
    torch_dtype: torch.dtype | str | None = None,
    dtype: torch.dtype | str | None = None,
    local_files_only: bool | None = None,
    device_map: str | dict[str, Any] | torch.device | int | None = None,
    low_cpu_mem_usage: bool = True,
    token: str | bool | None = None,
    variant_fallback: str = "warn",
    **kwargs: Any,
) -> Any:
    """Load the diffusers autoencoder that ``config.json`` names (``_class_name``), through ckptkit.

    ``AutoencoderKL``, ``AutoencoderKLLTXVideo``, ``AutoencoderKLWan``,
    ``AutoencoderKLTemporalDecoder``, ...: the weights are found offline first, chosen by ckptkit's
    variant rules, checked against the index, and read into a model built on the meta device.
    Without a dtype the model is float32, as diffusers returns it.

    Args:
        pretrained_model_name_or_path: a VAE or pipeline directory, weights file, hub repo id or
            cache directory (anything :func:`ckptkit.resolve_ckpt_dir` accepts).
        subfolder: the component folder; for a pipeline it defaults to ``vae``.
        cache_dir: the hub cache to look in (hub forms).
        revision: branch, tag or commit (hub forms).
        local_files_only: never download.
        token: hub token (hub forms).
        variant: ``"fp16"``, ...; see ``variant_fallback``.
        torch_dtype: the dtype to load in (the older name of ``dtype``).
        dtype: the dtype (wins over ``torch_dtype``), a ``torch.dtype`` or ``"bf16"``-like string.
        device_map: a device (``"cuda:0"``), ``"auto"`` or a module -> device dict (accelerate).
        low_cpu_mem_usage: accepted for compatibility; loading always goes through the meta device.
        variant_fallback: ``"warn"``, ``"allow"`` or ``"error"`` when the variant is missing.
        kwargs: config overrides, passed to ``cls.from_config(config, **kwargs)``; a keyword that is
            not a config key of the class raises ``TypeError`` naming it (diffusers would warn and
            drop it). ``output_loading_info=True`` returns ``(model, info)``;
            ``use_safetensors=True`` requires safetensors weights; ``max_memory``/``offload_folder``
            go to ``device_map`` placement; download and reading options with nothing left to do
            (``resume_download``, ...) are accepted; ``disable_mmap=True`` gives private copies instead
            of copy-on-write views of the file; ones ckptkit cannot honour
            (``force_download=True``, ``proxies``, ``ignore_mismatched_sizes=True``, ...) raise
            ``TypeError`` naming them. Extra positional arguments raise ``TypeError``, as in diffusers.

    Returns:
        The autoencoder in eval mode, or ``(autoencoder, info)`` with ``output_loading_info=True``.

    Raises:
        TypeError: an unknown keyword, ``config=``, or an option ckptkit cannot honour.
        ValueError: ``quantization_config`` (not supported; use diffusers for it).
        CheckpointNotFoundError: no weights or no config.json.
        VariantNotFoundError: the variant rules refuse.
        IncompleteCheckpointError, CorruptCheckpointError: missing shards, bad headers, a config that
            names no autoencoder, weights that do not fit the config.

    Example:
        >>> vae = load_vae("PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers", dtype="fp16")  # doctest: +SKIP
        >>> type(vae).__name__
        'AutoencoderKL'
    """
    hub = {"cache_dir": cache_dir, "revision": revision, "local_files_only": local_files_only, "token": token}
    return load_diffusers_model(
        pretrained_model_name_or_path,
        component="vae",
        classes=VAE_CLASSES,
        accept=_is_autoencoder,
        what="autoencoder",
        subfolder=subfolder,
        variant=variant,
        variant_fallback=variant_fallback,
        torch_dtype=torch_dtype,
        dtype=dtype,
        device_map=device_map,
        hub=hub,
        config_overrides=kwargs,
        caller="load_vae",
    )
