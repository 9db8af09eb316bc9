"""Building a model on the meta device and filling it from a resolved checkpoint."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable
from typing import Any

import torch

from ckptkit.errors import CkptWarning, CorruptCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.io.module_fill import LoadResult
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.load.sharded import load_sharded
from ckptkit.placement.dispatch import load_with_device_map

__all__ = [
    "choose_dtype",
    "config_kwargs",
    "fill_model",
    "load_weights",
    "read_weights",
    "split_device_map",
    "user_dtype",
]

logger = logging.getLogger("ckptkit")

#: ``from_pretrained`` arguments about downloading or loading that ckptkit's own resolution and
#: reading replace; they are accepted and not passed to the config.
LOADER_ONLY_KWARGS = frozenset(
    {
        "use_safetensors",
        "force_download",
        "proxies",
        "resume_download",
        "output_loading_info",
        "disable_mmap",
        "mirror",
        "offload_state_dict",
        "ignore_mismatched_sizes",
        "weights_only",
        "_fast_init",
        "key_mapping",
    }
)

#: ``from_pretrained`` arguments that go to the placement of a planned ``device_map``.
PLACEMENT_KWARGS = ("max_memory", "offload_folder", "offload_buffers")

#: ``device_map`` values that ask accelerate to plan the placement.
PLANNED_DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")


def user_dtype(torch_dtype: object, dtype: object) -> torch.dtype | str | None:
    """One dtype from ``torch_dtype=`` and ``dtype=`` (``dtype`` wins, as in transformers and diffusers).

    Strings: ``"fp16"``, ``"bfloat16"``, ... and ``"auto"`` (kept as the string).
    """
    value = dtype if dtype is not None else torch_dtype
    if value is None or value == "auto":
        return value  # type: ignore[return-value]
    return to_torch_dtype(value)


def config_kwargs(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split ``**kwargs`` of a ``from_pretrained`` call: (config overrides, loader options).

    Loader options kept: ``max_memory``, ``offload_folder``, ``offload_buffers`` (for planned
    ``device_map``) and ``disable_mmap`` (private copies instead of views of the files).
    Quantization is refused rather than silently ignored.

    Raises:
        ValueError: ``quantization_config`` was given.
    """
    if kwargs.get("quantization_config") is not None:
        raise ValueError(
            "ckptkit adapters do not quantize; call the library's from_pretrained for quantization_config"
        )
    loader = {
        k: kwargs[k] for k in kwargs if k in LOADER_ONLY_KWARGS or k in ("max_memory", "quantization_config")
    }
    ignored = sorted(k for k in loader if k not in ("max_memory", "disable_mmap"))
    if ignored:
        logger.info("ckptkit resolves and reads the weights itself; ignoring %s", ignored)
    return {k: v for k, v in kwargs.items() if k not in loader}, loader


def choose_dtype(
    ckpt: CheckpointDir, requested: torch.dtype | str | None, default: torch.dtype | None
) -> torch.dtype | None:
    """The dtype to load in: the user's; else the variant-fallback cast; else the library default.

    ``default`` ``None`` means "as stored" (transformers' ``"auto"`` without a config dtype).
    """
    if isinstance(requested, torch.dtype):
        return requested
    selection = ckpt.selection
    if requested is None and selection is not None and selection.cast_dtype:
        return to_torch_dtype(selection.cast_dtype)
    return default


def split_device_map(device_map: object) -> tuple[torch.device, object]:
    """``device_map`` -> (the device to read onto, the map to dispatch with afterwards or ``None``)."""
    if device_map is None:
        return torch.device("cpu"), None
    if isinstance(device_map, int):
        return torch.device("cuda", device_map), None
    if isinstance(device_map, torch.device):
        return device_map, None
    if isinstance(device_map, str) and device_map not in PLANNED_DEVICE_MAPS:
        return torch.device(device_map), None
    if isinstance(device_map, dict) and set(device_map) == {""}:
        return split_device_map(device_map[""])
    return torch.device("cpu"), device_map


def fill_model(
    model: torch.nn.Module,
    ckpt: CheckpointDir,
    *,
    dtype: torch.dtype | None,
    keep_fp32_modules: Iterable[str],
    device: torch.device,
    tied: dict[str, str] | None = None,
    prefix: str | None = None,
    mmap: bool | None = None,
) -> None:
    """Fill a meta-device ``model`` from ``ckpt``, cast it, and tie its shared weights.

    Tensors keep their stored dtype when ``dtype`` is ``None``; else floating tensors are read at
    ``dtype``, except those of ``keep_fp32_modules``, which are read at float32 (one read each:
    the module-filling plan decides the dtype of every tensor before reading).

    Args:
        tied: target -> source parameter names that share storage (transformers' ``_tied_weights_keys``).
        prefix: use only the checkpoint keys under this prefix, stripped (``"vae."`` of a single file).
        mmap: ``False``: private copies; default: CPU tensors in their stored dtype are views of the files.

    Raises:
        ModelMismatchError: a tensor's shape differs from the model's.
        CorruptCheckpointError: the checkpoint lacks tensors the model needs.
    """
    result = load_sharded(
        ckpt,
        model=model,
        dtype=dtype,
        device=device,
        prefix=prefix,
        strict=False,
        progress=False,
        keep_in_fp32_modules=list(keep_fp32_modules),
        mmap=mmap,
    )
    assert isinstance(result, LoadResult)
    unexpected = list(result.unexpected_keys)
    _tie(model, tied or {})
    _raise_missing(model, ckpt.index_file or (ckpt.weight_files[0] if ckpt.weight_files else ckpt.path))
    if unexpected:
        warnings.warn(
            f"{ckpt.path}: {len(unexpected)} tensors in the checkpoint are not used by "
            f"{type(model).__name__}: {', '.join(unexpected[:5])}",
            CkptWarning,
            stacklevel=4,
        )


def read_weights(
    ckpt: CheckpointDir, *, prefix: str | None = None, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    """The tensors of ``ckpt`` (under ``prefix``, stripped), floating ones read at ``dtype``."""
    state = load_sharded(ckpt, prefix=prefix, dtype=dtype, progress=False)
    assert isinstance(state, dict)
    return state


def _tie(model: torch.nn.Module, tied: dict[str, str]) -> None:
    state = dict(model.named_parameters(remove_duplicate=False))
    for target, source in tied.items():
        # Old checkpoints store the copy (``encoder.embed_tokens.weight``) and not the source.
        if target in state and source in state and state[source].is_meta and not state[target].is_meta:
            module_name, _, leaf = source.rpartition(".")
            model.get_submodule(module_name)._parameters[leaf] = state[target]
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()


def load_weights(
    model: torch.nn.Module,
    ckpt: CheckpointDir,
    *,
    dtype: torch.dtype | None,
    keep_fp32_modules: Iterable[str] | None,
    device_map: object,
    loader: dict[str, Any],
    tied: dict[str, str] | None = None,
) -> None:
    """Fill a meta-built ``model`` in place onto one device, or place it over several (``device_map``).

    One device (``None``, ``"cuda:0"``, ``{"": 0}``): :func:`fill_model`. ``"auto"``,
    ``"balanced"``, ... or a per-module dict: :func:`ckptkit.placement.dispatch.load_with_device_map`, which
    reads each tensor once straight to its device or leaves it on disk (``offload_folder``) and
    installs accelerate's hooks.

    Args:
        keep_fp32_modules: modules read at float32 when ``dtype`` is lower (the library's rule,
            already applied: transformers keeps them only under float16).
        loader: ``max_memory``, ``offload_folder``, ``offload_buffers``, ``disable_mmap`` from the
            caller's kwargs.
    """
    keep = sorted(keep_fp32_modules or ())
    device, planned = split_device_map(device_map)
    mmap = False if loader.get("disable_mmap") else None
    if planned is None:
        fill_model(model, ckpt, dtype=dtype, keep_fp32_modules=keep, device=device, tied=tied, mmap=mmap)
        return
    result = load_with_device_map(
        ckpt,
        model,
        device_map=planned,  # type: ignore[arg-type]
        max_memory=loader.get("max_memory"),
        offload_folder=loader.get("offload_folder"),
        offload_buffers=bool(loader.get("offload_buffers", False)),
        dtype=dtype,
        strict=False,
        keep_in_fp32_modules=keep,
        mmap=mmap,
    )
    if result.unexpected_keys:
        warnings.warn(
            f"{ckpt.path}: {len(result.unexpected_keys)} tensors in the checkpoint are not used by "
            f"{type(model).__name__}: {', '.join(result.unexpected_keys[:5])}",
            CkptWarning,
            stacklevel=3,
        )
    logger.info("placed %s over %s", type(model).__name__, result.device_map)


def _raise_missing(model: torch.nn.Module, where: str | os.PathLike[str]) -> None:
    # One walk over the modules (named_parameters and named_buffers would make two).
    missing, seen = [], set()
    for prefix, module in model.named_modules():
        head = f"{prefix}." if prefix else ""
        for tensors in (module._parameters, module._buffers):
            for name, tensor in tensors.items():
                if tensor is not None and tensor.is_meta and id(tensor) not in seen:
                    seen.add(id(tensor))
                    missing.append(head + name)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CorruptCheckpointError(
            f"the checkpoint lacks {len(missing)} tensors the model needs: {shown}",
            path=where,
            fix="check that the config and the weights belong to the same model",
        )
