"""Loading one diffusers model (a VAE or a transformer) the way ``ModelMixin.from_pretrained`` does."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ckptkit.adapters._build import (
    PLACEMENT_KWARGS,
    choose_dtype,
    config_kwargs,
    load_weights,
    user_dtype,
)
from ckptkit.adapters._component import ComponentRequest, read_config, resolve_component
from ckptkit.adapters._options import pop_loading_options
from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.components import CONFIG_NAME
from ckptkit.io.gc_pause import gc_paused

__all__ = ["diffusers_class", "load_diffusers_model"]

#: diffusers' own remapping of the legacy ``Transformer2DModel`` name, by ``norm_type``.
LEGACY_TRANSFORMER_2D = {
    "ada_norm_single": "PixArtTransformer2DModel",
    "ada_norm_zero": "DiTTransformer2DModel",
}


def diffusers_class(config: dict[str, Any], *, path: Path, accept: Callable[[str], bool], what: str) -> type:
    """The diffusers model class ``config.json`` names in ``_class_name`` (legacy names remapped).

    Raises:
        CorruptCheckpointError: no ``_class_name``, one diffusers does not have, or not a ``what``.
    """
    import diffusers

    name = config.get("_class_name")
    if name == "Transformer2DModel":
        name = LEGACY_TRANSFORMER_2D.get(str(config.get("norm_type")), name)
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if cls is None or not isinstance(cls, type) or not issubclass(cls, diffusers.ModelMixin):
        raise CorruptCheckpointError(
            f"config.json names no diffusers model class (_class_name={config.get('_class_name')!r})",
            path=path,
            fix=f"point at the {what} folder of a diffusers model (or upgrade diffusers)",
        )
    if not accept(name):  # type: ignore[arg-type]
        raise CorruptCheckpointError(
            f"config.json describes {name}, not the {what} this loader builds",
            path=path,
            fix=f"pass subfolder= the {what} folder",
        )
    return cls


def load_diffusers_model(
    spec: str | os.PathLike[str] | CheckpointDir,
    *,
    component: str,
    classes: set[str],
    accept: Callable[[str], bool],
    what: str,
    subfolder: str | None,
    variant: str | None,
    variant_fallback: str,
    torch_dtype: object,
    dtype: object,
    device_map: object,
    hub: dict[str, Any],
    config_overrides: dict[str, Any],
    model_class: type | None = None,
    caller: str = "from_pretrained",
) -> Any:
    """Resolve, build on meta, fill and place one diffusers model (see :func:`ckptkit.adapters.load_vae`).

    Args:
        model_class: build this ``ConfigMixin`` class instead of the one ``config.json`` names (a
            project's own class, such as Wan's ``WanModel``).
        caller: the public function's name, for messages.

    Returns:
        The model, or ``(model, info)`` with ``output_loading_info=True``.

    Raises:
        TypeError: a keyword that is neither a config key of the class nor a loading option (diffusers
            would only warn and drop it), ``config=`` (diffusers' ``from_pretrained`` has none), or an
            option ckptkit cannot honour.
    """
    from accelerate import init_empty_weights

    try:
        from diffusers.models.modeling_utils import no_init_weights
    except ImportError:  # diffusers before 0.33 had none
        from contextlib import nullcontext as no_init_weights  # type: ignore[assignment]

    config_overrides = dict(config_overrides)
    options = pop_loading_options(config_overrides, caller=caller)
    if "config" in config_overrides:
        raise TypeError(
            f"{caller}() got an unexpected keyword argument 'config' (diffusers' from_pretrained has none)"
        )
    request = ComponentRequest(spec, subfolder, component, classes, variant, variant_fallback, hub)
    ckpt = resolve_component(request)
    options.check_format(ckpt)
    config = read_config(ckpt)
    cls = model_class or diffusers_class(config, path=Path(ckpt.path) / CONFIG_NAME, accept=accept, what=what)
    requested = user_dtype(torch_dtype, dtype)
    if requested == "auto":
        requested = None
    # diffusers builds in float32 and casts only when asked; a variant fallback asks on the user's behalf.
    load_dtype = choose_dtype(ckpt, requested, torch.float32)
    keep = getattr(cls, "_keep_in_fp32_modules", None) if load_dtype != torch.float32 else None

    overrides, loader = config_kwargs(config_overrides)
    loader |= {k: overrides.pop(k) for k in PLACEMENT_KWARGS if k in overrides}
    unknown = sorted(set(overrides) - set(cls._get_init_keys(cls)))  # type: ignore[attr-defined]
    if unknown:
        raise TypeError(
            f"{caller}() got keyword arguments that are not {cls.__name__} config keys nor loading options: "
            + ", ".join(unknown)
        )
    # Every weight comes from the checkpoint (a missing one raises): skip the random init, as
    # from_pretrained does; on meta tensors it would only cost time.
    # gc_paused: building a model makes many objects and no cycles (see ckptkit.io.gc_pause).
    with init_empty_weights(), no_init_weights(), gc_paused():
        model = cls.from_config(config, **overrides)  # type: ignore[attr-defined]
    load_weights(model, ckpt, dtype=load_dtype, keep_fp32_modules=keep, device_map=device_map, loader=loader)
    if not keep and load_dtype not in (None, torch.float32) and device_map is None and _casts_whole_model():
        model.to(load_dtype)  # buffers too, as that diffusers' from_pretrained does
    model.eval()
    if hasattr(model, "register_to_config"):
        model.register_to_config(_name_or_path=os.fspath(spec))
    return options.result(model, ckpt, as_sets=False)


def _casts_whole_model() -> bool:
    """Whether the installed diffusers' ``from_pretrained`` ends with ``model.to(torch_dtype)``.

    diffusers 0.31 casts the whole model, buffers included (a PixArt ``pos_embed``); 0.33 and later
    cast only the weights they load. No attribute tells them apart, so the version decides.
    """
    import diffusers

    parts = str(getattr(diffusers, "__version__", "1")).split(".")
    major, minor = (int(p) if p.isdigit() else 0 for p in [*parts, "0"][:2])
    return (major, minor) < (0, 33)
