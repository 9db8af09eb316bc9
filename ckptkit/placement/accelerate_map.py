"""The device map accelerate makes for a model: planned modes, a user's map completed, lookups.

Torch and accelerate live here (unlike :mod:`ckptkit.placement.device_map`, which plans from
headers alone); :mod:`ckptkit.placement.dispatch` executes the map.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ckptkit.errors import CkptError
from ckptkit.placement.device_map import DEVICE_MAP_MODES, normalize_max_memory

__all__ = [
    "Device",
    "complete_device_map",
    "device_of",
    "dispatch_options",
    "forget_meta_pointer",
    "make_device_map",
    "model_tensors",
    "tie_weights",
]

logger = logging.getLogger("ckptkit")

Device = int | str


def tie_weights(model: torch.nn.Module) -> None:
    """Tie shared weights as ``from_pretrained`` does: transformers v5 ties them only on load."""
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()


def make_device_map(
    model: torch.nn.Module,
    device_map: str | Mapping[str, Any],
    max_memory: Mapping[Any, int | str] | None,
    no_split: Sequence[str] | None,
    held: Mapping[str, torch.dtype],
) -> dict[str, Device]:
    from accelerate.utils import get_balanced_memory, infer_auto_device_map

    if isinstance(device_map, Mapping):
        return complete_device_map(model, dict(device_map))
    if device_map not in DEVICE_MAP_MODES:
        raise ValueError(
            f"device_map must be one of {DEVICE_MAP_MODES}, a dict or a device, not {device_map!r}"
        )
    classes = list(no_split if no_split is not None else getattr(model, "_no_split_modules", None) or [])
    budgets: dict[Any, Any] | None = (
        dict(normalize_max_memory(max_memory)) if max_memory is not None else None
    )
    special = {name: str(d).removeprefix("torch.") for name, d in held.items()}
    if device_map != "sequential":
        try:
            budgets = get_balanced_memory(
                model,
                max_memory=budgets,
                no_split_module_classes=classes,
                special_dtypes=special,
                low_zero=device_map == "balanced_low_0",
            )
        except RuntimeError as exc:
            if not any(isinstance(d, int) for d in budgets or ()):
                raise
            # older accelerate (1.6 at least) resolves GPU indices through torch.device, which fails without one.
            raise CkptError(
                f"the installed accelerate cannot balance GPU budgets on a machine without GPUs ({exc})",
                fix="plan from the headers with ckptkit.plan_device_map (or `ckptkit plan`), which needs "
                "no GPU, pass device_map='sequential', or upgrade accelerate",
            ) from None
    placed = infer_auto_device_map(
        model, max_memory=budgets, no_split_module_classes=classes, special_dtypes=special
    )
    return dict(placed)


def complete_device_map(model: torch.nn.Module, device_map: dict[str, Any]) -> dict[str, Device]:
    """A user's (or a header plan's) map, plus a device for tensors it does not cover.

    A plan made from headers cannot see tensors the file lacks: tied copies (they follow the tensor
    they share) and non-persistent buffers (they go to the main device: the first GPU, else the CPU).
    """
    from accelerate.utils import find_tied_parameters

    cleaned: dict[str, Device] = {}
    for name, device in device_map.items():
        if isinstance(device, torch.device):
            device = device.index if device.type == "cuda" and device.index is not None else str(device)
        elif isinstance(device, str) and device.isdigit():
            device = int(device)
        cleaned[str(name)] = device
    if not cleaned:
        raise ValueError("device_map is empty")
    # dispatch_model's main device: the first accelerator in the map, else the CPU
    main = sorted((d for d in cleaned.values() if d not in ("cpu", "disk")), key=str)
    first: Device = main[0] if main else "cpu"
    partners = {name: group for group in find_tied_parameters(model) for name in group}
    for name in model_tensors(model):
        if device_of(name, cleaned) is not None:
            continue
        covered = [device_of(other, cleaned) for other in partners.get(name, [])]
        device = next((d for d in covered if d is not None), first)
        # accelerate's map names modules: the tensor's own module takes the entry
        module = name.rpartition(".")[0]
        logger.info("device_map does not cover %s; placing %r on %s", name, module, device)
        cleaned[module] = device
    return cleaned


def device_of(name: str, device_map: Mapping[str, Device]) -> Device | None:
    parts = name.split(".")
    for depth in range(len(parts), -1, -1):
        prefix = ".".join(parts[:depth])
        if prefix in device_map:
            return device_map[prefix]
    return None


def model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    tensors.update(model.named_buffers(remove_duplicate=False))
    return tensors


def dispatch_options(placed: Mapping[str, Device]) -> dict[str, Any]:
    """Extra ``dispatch_model`` arguments a map needs under every supported accelerate.

    Older accelerate (1.1 and 1.6 at least) refuses a map that is all ``"disk"`` unless told to hook
    it with the CPU as the execution device; newer versions do just that by themselves.
    """
    return {"main_device": "cpu", "force_hooks": True} if set(placed.values()) == {"disk"} else {}


def forget_meta_pointer(model: torch.nn.Module) -> None:
    """Stop accelerate's hooks sharing tied weights by pointer when a tied group is left on disk.

    Older accelerate (1.1 and 1.6 at least) keys tied weights by ``data_ptr()``, which is 0 for every
    meta tensor: the first disk tensor loaded would be handed to every other disk tensor of the model
    (a layer norm running with the embedding), and some versions then fail to release it. Each tied
    name has its own offload-index entry, so the hooks read it by name instead, as newer versions do
    for tied weights on disk (at the cost of reading a shared tensor once per name).
    """
    for module in model.modules():
        hook = getattr(module, "_hf_hook", None)
        for one in [*getattr(hook, "hooks", ()), hook]:
            if isinstance(getattr(one, "tied_params_map", None), dict):
                one.tied_params_map = None
                one.tied_params_names = set()
