"""A model built on the meta device (the FSDP2 recipe): allocate its local shards, recompute its buffers.

``fully_shard`` of a meta model leaves every DTensor's local shard on ``meta``. :func:`allocate_meta_model`
allocates them where the process group computes (``to_empty``, which FSDP2 supports: each rank gets
only its own shards), then gives back the non-persistent buffers no checkpoint holds (rotary
frequencies) the values the model's own ``__init__`` computes.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from ckptkit.distributed.boxes import local_part
from ckptkit.errors import CkptWarning

__all__ = ["Allocation", "allocate_meta_model", "recompute_buffers"]

logger = logging.getLogger("ckptkit")


@dataclass
class Allocation:
    """What :func:`allocate_meta_model` did.

    Attributes:
        device: where the local shards were allocated.
        recomputed: non-persistent buffers given the values the model's own init computes.
        uninitialized: non-persistent buffers that could not be recomputed (their memory is
            allocated but holds no meaningful values).
    """

    device: torch.device
    recomputed: list[str] = field(default_factory=list)
    uninitialized: list[str] = field(default_factory=list)


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    named: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    named.update(model.named_buffers(remove_duplicate=False))
    return named


def _device_of(model: torch.nn.Module, device: str | torch.device | None) -> torch.device:
    """``device``, else the device type of the model's DTensor mesh (its current index), else CPU."""
    if device is not None:
        return torch.device(device)
    from torch.distributed.tensor import DTensor

    mesh_type = next(
        (t.device_mesh.device_type for t in _tensors(model).values() if isinstance(t, DTensor)), "cpu"
    )
    if mesh_type == "cpu":
        return torch.device("cpu")
    backend = getattr(torch, mesh_type, None)
    if backend is not None and hasattr(backend, "current_device"):
        return torch.device(mesh_type, backend.current_device())
    return torch.device(mesh_type)


def allocate_meta_model(
    model: torch.nn.Module, *, device: str | torch.device | None = None
) -> Allocation | None:
    """Allocate the local shards of a model whose every tensor is on ``meta``; ``None`` when none is.

    Args:
        model: built under ``torch.device("meta")``, then ``fully_shard``-ed (or ``distribute_tensor``-ed).
        device: where to allocate; default: the device type of its DTensors' mesh (``cuda`` -> the
            current CUDA device), else CPU.

    Returns:
        The :class:`Allocation`, or ``None`` when nothing was on ``meta`` (nothing was done).

    Raises:
        ValueError: some tensors are on ``meta`` and others hold values (``to_empty`` would discard
            them), or the device cannot be allocated on.

    Example:
        >>> with torch.device("meta"):  # doctest: +SKIP
        ...     model = LlamaForCausalLM(config)
        >>> fully_shard(model)  # doctest: +SKIP
        >>> allocate_meta_model(model).device  # doctest: +SKIP
        device(type='cpu')
    """
    tensors = _tensors(model)
    on_meta = [name for name, t in tensors.items() if local_part(t).is_meta]
    if not on_meta:
        return None
    if len(on_meta) != len(tensors):
        held = [name for name in tensors if name not in set(on_meta)]
        raise ValueError(
            f"{on_meta[0]!r} lives on the meta device but {held[0]!r} (and {len(held) - 1} more) hold "
            "values that allocating would discard; allocate the local shards first with "
            "model.to_empty(device=...) after fully_shard, then set those values"
        )
    target = _device_of(model, device)
    try:
        model.to_empty(device=target)
    except (RuntimeError, AssertionError) as exc:
        raise ValueError(
            f"cannot allocate the model's local shards on {target} ({exc}); pass device= one this "
            "process can allocate on, or call model.to_empty(device=...) yourself"
        ) from None
    allocation = Allocation(target)
    allocation.recomputed, allocation.uninitialized = recompute_buffers(model, device=target)
    logger.info(
        "allocated %d tensors on %s; recomputed buffers: %s", len(tensors), target, allocation.recomputed
    )
    return allocation


def _non_persistent(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for name in module._non_persistent_buffers_set:
            buffer = module._buffers.get(name)
            if buffer is not None:
                out[f"{prefix}.{name}" if prefix else name] = buffer
    return out


def _meta_attributes(model: torch.nn.Module) -> dict[str, tuple[torch.nn.Module, str]]:
    """Tensors kept as plain module attributes (no parameter, no buffer) and left on ``meta``.

    ``to_empty`` cannot reach them: older diffusers (0.33) keep Wan's rotary table as ``rope.freqs``.
    """
    out = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        for name, value in vars(module).items():
            if (
                isinstance(value, torch.Tensor)
                and not isinstance(value, torch.nn.Parameter)
                and value.is_meta
            ):
                out[f"{prefix}.{name}" if prefix else name] = (module, name)
    return out


def recompute_buffers(
    model: torch.nn.Module, *, device: str | torch.device | None = None
) -> tuple[list[str], list[str]]:
    """Give ``model``'s non-persistent buffers the values its class's own ``__init__`` computes.

    The model's class (the one ``fully_shard`` wrapped) is built again from ``model.config``
    (transformers' ``_from_config``, diffusers' ``from_config``) with its parameters on ``meta``, so
    nothing but the buffers takes memory or time; the buffers it computes are copied in, and so are
    tensors the class keeps as plain attributes that are still on ``meta`` (moved to ``device``,
    default CPU). A warning names the buffers this cannot reach (no ``config``, or the class cannot
    be built from it).

    Returns:
        ``(recomputed, uninitialized)`` buffer (and attribute) names.
    """
    wanted = _non_persistent(model)
    attributes = _meta_attributes(model)
    if not wanted and not attributes:
        return [], []
    rebuilt = _rebuilt(model)
    fresh = dict(rebuilt.named_buffers(remove_duplicate=False)) if rebuilt is not None else {}
    recomputed, uninitialized = [], []
    with torch.no_grad():
        for name, buffer in wanted.items():
            value = fresh.get(name)
            if value is None or value.is_meta or value.shape != buffer.shape:
                uninitialized.append(name)
                continue
            buffer.copy_(value)
            recomputed.append(name)
        for name, (module, attribute) in attributes.items():
            owner = _submodule(rebuilt, name.rpartition(".")[0]) if rebuilt is not None else None
            value = vars(owner).get(attribute) if owner is not None else None
            if not isinstance(value, torch.Tensor) or value.is_meta:
                uninitialized.append(name)
                continue
            setattr(module, attribute, value.to(device or "cpu"))
            recomputed.append(name)
    if uninitialized:
        warnings.warn(
            f"{type(model).__name__}: non-persistent buffers or attributes {uninitialized} are in no checkpoint and "
            "could not be recomputed (the model cannot be rebuilt from its config); they hold "
            "uninitialised memory: set them as the model's __init__ does before using it",
            CkptWarning,
            stacklevel=3,
        )
    return recomputed, uninitialized


def _model_class(model: torch.nn.Module) -> type:
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch without distributed
        return type(model)
    # fully_shard swaps the class for FSDP<Class>(FSDPModule, Class).
    return next(c for c in type(model).__mro__ if not issubclass(c, FSDPModule))


def _rebuilt(model: torch.nn.Module) -> torch.nn.Module | None:
    """``model``'s class built again from its config, parameters on ``meta``; ``None`` if it cannot be."""
    config = getattr(model, "config", None)
    cls = _model_class(model)
    build = getattr(cls, "_from_config", None) or getattr(cls, "from_config", None)
    if config is None or build is None:
        return None
    try:
        with _parameters_on_meta():
            fresh = build(config)
    except Exception as exc:  # any failure of a foreign constructor: fall back to naming the buffers
        logger.info("could not rebuild %s from its config to recompute buffers: %s", cls.__name__, exc)
        return None
    return fresh if isinstance(fresh, torch.nn.Module) else None


def _submodule(model: torch.nn.Module, path: str) -> torch.nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build modules with every parameter moved to ``meta`` as it is registered; buffers stay real.

    Parameter initialisers then run on ``meta`` (free); buffers are computed by the real code.
    """
    original = torch.nn.Module.register_parameter

    def register(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        original(module, name, param)
        if param is not None and not param.is_meta:
            moved = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
            module._parameters[name] = moved

    torch.nn.Module.register_parameter = register  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original  # type: ignore[method-assign,assignment]
