"""Building a transformers ``PreTrainedModel`` and filling it, as its ``from_pretrained`` does.

One piece for every loader that stands in for a transformers ``from_pretrained``: ``load_t5`` and
the Open-Sora builders (``STDiT3`` / ``VideoAutoencoderPipeline`` / ``CLIPTextModel``).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from ckptkit.adapters._build import choose_dtype, load_weights
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.safetensors_header import read_header
from ckptkit.io.gc_pause import gc_paused
from ckptkit.io.tensors import to_torch_dtype

__all__ = ["build_and_fill", "is_v5"]

#: Dtypes ``torch.set_default_dtype`` takes.
_DEFAULTABLE = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def build_and_fill(
    transformers: Any,
    cls: type,
    config: Any,
    ckpt: CheckpointDir,
    *,
    model_args: tuple[Any, ...],
    model_kwargs: dict[str, Any],
    requested: torch.dtype | str | None,
    device_map: Any,
    loader: dict[str, Any],
    name_or_path: str | os.PathLike[str] | CheckpointDir,
) -> Any:
    """Build ``cls(config, *model_args, **model_kwargs)`` on meta and fill it from ``ckpt``.

    As transformers does: the dtype is ``requested`` or transformers' default (float32 under 4.x; the
    config's or the stored one under 5 or with ``"auto"``); the model is built under that default
    dtype (so buffers its constructor makes are in it too) with no random init; ``_keep_in_fp32_modules``
    stay float32 under float16 (``_keep_in_fp32_modules_strict`` under bfloat16 too); ties are kept;
    the config records the dtype and ``name_or_path``; the model is returned in eval mode.
    """
    from accelerate import init_empty_weights

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights  # type: ignore[attr-defined,no-redef]

    auto = config_dtype(config) or stored_dtype(ckpt)
    default = auto if requested == "auto" or is_v5(transformers) else torch.get_default_dtype()
    load_dtype = choose_dtype(ckpt, requested, default)
    previous = torch.get_default_dtype()
    if load_dtype in _DEFAULTABLE:
        torch.set_default_dtype(load_dtype)
    try:
        # Every weight comes from the checkpoint (a missing one raises): skip the random init, as
        # from_pretrained does. gc_paused: building makes many objects and no cycles.
        with init_empty_weights(), no_init_weights(), gc_paused():
            # from_pretrained's own call: extra arguments reach the class.
            model = cls(config, *model_args, **model_kwargs)
    finally:
        torch.set_default_dtype(previous)
    keep = set()
    if load_dtype == torch.float16:
        keep |= set(getattr(model, "_keep_in_fp32_modules", None) or ())
    if load_dtype in (torch.float16, torch.bfloat16):
        keep |= set(getattr(model, "_keep_in_fp32_modules_strict", None) or ())
    tied = getattr(model, "_tied_weights_keys", None)
    load_weights(
        model,
        ckpt,
        dtype=load_dtype,
        keep_fp32_modules=keep,
        device_map=device_map,
        loader=loader,
        tied=tied if isinstance(tied, dict) else None,
    )
    model.eval()
    if load_dtype is not None:
        # transformers >= 4.56 names it ``dtype`` (``torch_dtype`` is then a deprecated alias property).
        field = "torch_dtype" if "torch_dtype" in vars(model.config) else "dtype"
        setattr(model.config, field, load_dtype)
    model.config.name_or_path = os.fspath(
        name_or_path.path if isinstance(name_or_path, CheckpointDir) else name_or_path
    )
    return model


def is_v5(transformers: Any) -> bool:
    """Whether the installed transformers is 5 or later, where ``from_pretrained`` changed.

    transformers 5 defaults to ``dtype="auto"`` (4.x loads in ``torch.get_default_dtype()``, float32,
    unless asked) and reports loading info as sets (4.x: lists). Neither change has an attribute to
    detect it by, so the major version decides.
    """
    major = str(getattr(transformers, "__version__", "5")).split(".")[0]
    return not major.isdigit() or int(major) >= 5


def config_dtype(config: Any) -> torch.dtype | None:
    """The dtype config.json records: ``dtype`` (transformers >= 4.56) or ``torch_dtype`` (older)."""
    for value in (getattr(config, "dtype", None), vars(config).get("torch_dtype")):
        if isinstance(value, torch.dtype):
            return value
    return None


def stored_dtype(ckpt: CheckpointDir) -> torch.dtype | None:
    """The dtype of the first floating tensor stored (transformers' ``dtype="auto"`` fallback)."""
    if ckpt.format != "safetensors" or not ckpt.weight_files:
        return None
    for info in read_header(ckpt.weight_files[0]).tensors.values():
        dtype = to_torch_dtype(info.dtype)
        if dtype.is_floating_point:
            return dtype
    return None
