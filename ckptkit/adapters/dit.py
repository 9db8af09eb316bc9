"""``load_dit``: a diffusers diffusion transformer, as ``PixArtTransformer2DModel.from_pretrained`` returns it."""

from __future__ import annotations

import os
from typing import Any

import torch

from ckptkit.adapters._diffusers import load_diffusers_model
from ckptkit.format.checkpoint import CheckpointDir

__all__ = ["load_dit"]

#: model_index.json class names that mark a pipeline's diffusion transformer.
DIT_CLASSES = {
    "PixArtTransformer2DModel",
    "Transformer2DModel",
    "DiTTransformer2DModel",
    "LTXVideoTransformer3DModel",
    "WanTransformer3DModel",
    "SD3Transformer2DModel",
    "FluxTransformer2DModel",
    "CogVideoXTransformer3DModel",
    "HunyuanVideoTransformer3DModel",
    "MochiTransformer3DModel",
    "AllegroTransformer3DModel",
    "SanaTransformer2DModel",
}


def _is_transformer(name: str) -> bool:
    return name in DIT_CLASSES or "Transformer" in name


def load_dit(
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
    """Load the diffusers transformer that ``config.json`` names (``_class_name``), through ckptkit.

    ``PixArtTransformer2DModel`` (also under the legacy ``Transformer2DModel`` name, remapped by
    ``norm_type`` as diffusers does), ``LTXVideoTransformer3DModel``, ``WanTransformer3DModel``, ...:
    the weights are found offline first, chosen by ckptkit's
    variant rules, checked against the index, and read into a model built on the meta device.
    Without a dtype the model is float32, as diffusers returns it; with one, the class's
    ``_keep_in_fp32_modules`` (Wan: ``rope``, ``time_embedder``, norms) stay float32.

    Args:
        pretrained_model_name_or_path: a transformer or pipeline directory, weights file, hub repo id or
            cache directory (anything :func:`ckptkit.resolve_ckpt_dir` accepts).
        subfolder: the component folder; for a pipeline it defaults to ``transformer``.
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
        The transformer in eval mode, or ``(transformer, info)`` with ``output_loading_info=True``.

    Raises:
        TypeError: an unknown keyword, ``config=``, or an option ckptkit cannot honour.
        ValueError: ``quantization_config`` (not supported; use diffusers for it).
        CheckpointNotFoundError: no weights or no config.json.
        VariantNotFoundError: the variant rules refuse.
        IncompleteCheckpointError, CorruptCheckpointError: missing shards, bad headers, a config that
            names no transformer, weights that do not fit the config.

    Example:
        >>> dit = load_dit("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", dtype="bf16")  # doctest: +SKIP
        >>> type(dit).__name__
        'WanTransformer3DModel'
    """
    hub = {"cache_dir": cache_dir, "revision": revision, "local_files_only": local_files_only, "token": token}
    return load_diffusers_model(
        pretrained_model_name_or_path,
        component="transformer",
        classes=DIT_CLASSES,
        accept=_is_transformer,
        what="transformer",
        subfolder=subfolder,
        variant=variant,
        variant_fallback=variant_fallback,
        torch_dtype=torch_dtype,
        dtype=dtype,
        device_map=device_map,
        hub=hub,
        config_overrides=kwargs,
        caller="load_dit",
    )
