"""Filling an ``nn.Module``: the one plan every loading path executes, and the slots it fills.

:func:`plan_module_fill` decides, from the checkpoint's headers (names, shapes, dtypes) and the
model, before a byte of tensor data is read: which checkpoint key fills which module key
(``prefix``/``strip_prefixes``), which keys are missing or unexpected (tied weights count once),
whether every shape fits, and the dtype each tensor is read at (``dtype=`` casts floating tensors,
``_keep_in_fp32_modules`` stay float32). The plain reader (:mod:`ckptkit.load.sharded`), accelerate
placement (:mod:`ckptkit.placement.dispatch`), DTensor models (:mod:`ckptkit.distributed.load`)
and the adapters only execute it, so the same input gives the same answer and the same error on
every path. It lives on the I/O floor, below all of them, for that reason.

A materialized parameter of the right dtype and device is filled in its own storage (no extra
copy). Anything else — a meta parameter, a dtype or device change — gets a fresh tensor that is
filled and then assigned, to every name it is tied under, so tied weights stay tied.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import nn

from ckptkit.errors import ModelMismatchError
from ckptkit.format.keys import KeySelection, in_modules, select_keys

__all__ = ["FillPlan", "LoadResult", "ModuleSlots", "Placement", "StoredTensor", "plan_module_fill"]


class LoadResult(NamedTuple):
    """What loading into a module did, like ``nn.Module.load_state_dict``'s result.

    Attributes:
        missing_keys: module keys the checkpoint did not fill (tied aliases of a filled key are
            not missing).
        unexpected_keys: selected checkpoint keys the module has no place for.
    """

    missing_keys: list[str]
    unexpected_keys: list[str]


@dataclass
class Placement:
    """Where one checkpoint tensor goes in the module.

    Attributes:
        key: the module's state-dict key.
        target: the tensor to fill (the parameter itself, or a fresh tensor to assign).
        assign: whether ``target`` must be assigned after it is filled.
    """

    key: str
    target: torch.Tensor
    assign: bool


@dataclass
class _Slot:
    owners: list[tuple[nn.Module, str]] = field(default_factory=list)
    is_parameter: bool = True


class ModuleSlots:
    """The loadable tensors of a module (parameters and persistent buffers), by state-dict key.

    ``tie``: first tie the weights a transformers model declares tied (as ``from_pretrained``
    does); off for a model already sharded (FSDP2 holds its own references to its parameters).

    Example:
        >>> slots = ModuleSlots(torch.nn.Linear(2, 2))
        >>> sorted(slots.keys())
        ['bias', 'weight']
    """

    def __init__(self, module: nn.Module, *, tie: bool = True) -> None:
        self.module = module
        if tie:
            _tie_declared_weights(module)
        self._slots: dict[str, _Slot] = {}
        self._tensor: dict[str, torch.Tensor] = {}
        by_id: dict[int, str] = {}
        self._alias: dict[str, str] = {}  # key -> first key holding the same tensor
        self._group: dict[str, list[str]] = {}  # first key -> every key holding that tensor
        for prefix, sub in module.named_modules(remove_duplicate=False):
            head = f"{prefix}." if prefix else ""
            for name, param in sub._parameters.items():
                if param is not None:
                    self._add(f"{head}{name}", sub, name, param, True, by_id)
            for name, buf in sub._buffers.items():
                if buf is not None and name not in sub._non_persistent_buffers_set:
                    self._add(f"{head}{name}", sub, name, buf, False, by_id)

    def _add(
        self,
        key: str,
        owner: nn.Module,
        name: str,
        tensor: torch.Tensor,
        is_param: bool,
        by_id: dict[int, str],
    ) -> None:
        first = by_id.setdefault(id(tensor), key)
        if key not in self._alias:
            self._group.setdefault(first, []).append(key)
        self._alias[key] = first
        slot = self._slots.setdefault(first, _Slot(is_parameter=is_param))
        if (owner, name) not in [(o, n) for o, n in slot.owners]:
            slot.owners.append((owner, name))
        self._tensor[key] = tensor

    def keys(self) -> list[str]:
        return list(self._alias)

    def __iter__(self) -> Iterator[str]:
        return iter(self._alias)

    def __contains__(self, key: object) -> bool:
        return key in self._alias

    def current(self, key: str) -> torch.Tensor:
        return self._tensor[key]

    def aliases(self, key: str) -> list[str]:
        """Every key that names the same tensor as ``key`` (tied weights), ``key`` included."""
        return list(self._group[self._alias[key]])

    def placement(
        self, key: str, *, dtype: torch.dtype | None, device: torch.device | None, stored: torch.dtype
    ) -> Placement:
        """Where the checkpoint tensor for ``key`` should be read to.

        Args:
            key: the module key.
            dtype: the dtype asked for (floating tensors only), or ``None``.
            device: the device asked for, or ``None`` (meta tensors: CPU; others: where they are).
            stored: the dtype in the file.
        """
        current = self._tensor[key]
        want_dtype = dtype if dtype is not None and stored.is_floating_point else None
        if current.is_meta:
            return Placement(
                key,
                torch.empty(current.shape, dtype=want_dtype or stored, device=device or "cpu"),
                assign=True,
            )
        target_dtype = want_dtype or current.dtype
        target_device = device or current.device
        if target_dtype == current.dtype and target_device == current.device and current.is_contiguous():
            return Placement(key, current.detach(), assign=False)
        return Placement(
            key, torch.empty(current.shape, dtype=target_dtype, device=target_device), assign=True
        )

    def assign(self, key: str, tensor: torch.Tensor) -> None:
        """Put ``tensor`` in place of ``key``'s tensor under every name it is tied under."""
        slot = self._slots[self._alias[key]]
        old = self._tensor[key]
        value: torch.Tensor = (
            nn.Parameter(tensor, requires_grad=old.requires_grad) if slot.is_parameter else tensor
        )
        for owner, name in slot.owners:
            if slot.is_parameter:
                owner._parameters[name] = value  # type: ignore[assignment]
            else:
                owner._buffers[name] = value
        for alias in self.aliases(key):
            self._tensor[alias] = value


def _tie_declared_weights(module: nn.Module) -> None:
    # transformers models declare tied weights (T5's embed_tokens = shared) and tie them in
    # ``tie_weights()``; a model built under ``init_empty_weights`` comes untied. Tying first makes
    # the aliases one tensor, so filling one fills both, as ``from_pretrained`` does. It links
    # parameters and copies no data.
    tie = getattr(module, "tie_weights", None)
    if callable(tie) and hasattr(module, "_tied_weights_keys"):
        tie()


@dataclass(frozen=True)
class StoredTensor:
    """What the plan needs to know of one checkpoint tensor (from its header, or a loaded tensor).

    Attributes:
        key: the key in the checkpoint.
        shape: its shape, ``None`` while not known yet (torch shards read one at a time).
        dtype: its stored dtype, ``None`` while not known yet.
    """

    key: str
    shape: tuple[int, ...] | None = None
    dtype: torch.dtype | None = None


@dataclass
class FillPlan:
    """How a checkpoint fills a module, decided before anything is read.

    Attributes:
        slots: the module's loadable tensors.
        selection: module key -> checkpoint key, for every selected checkpoint key (checkpoint order).
        fills: module key -> the checkpoint tensor read into it; one key per group of tied keys.
        missing_keys: module keys nothing fills (tied aliases of a filled key are not missing).
        unexpected_keys: selected checkpoint keys (under their module names) the module lacks.
        dtype: the ``dtype=`` asked for, or ``None``.
        keep_in_fp32: module names whose floating tensors stay float32 under ``dtype``.
        where: the checkpoint, for messages.
    """

    slots: ModuleSlots
    selection: KeySelection
    fills: dict[str, StoredTensor]
    missing_keys: list[str]
    unexpected_keys: list[str]
    dtype: torch.dtype | None
    keep_in_fp32: tuple[str, ...]
    where: str | os.PathLike[str] | None = None

    @property
    def result(self) -> LoadResult:
        return LoadResult(list(self.missing_keys), list(self.unexpected_keys))

    def cast(self, key: str, stored: torch.dtype) -> torch.dtype | None:
        """The dtype ``key`` is read at, or ``None`` for no cast (a meta tensor then keeps the stored
        dtype, a materialized one its own): float32 for a floating tensor of a kept module, else
        ``dtype`` for floating tensors."""
        if self.dtype is None or not stored.is_floating_point:
            return None
        if self.keep_in_fp32 and in_modules(key, self.keep_in_fp32):
            return torch.float32
        return self.dtype

    def held_dtype(self, key: str) -> torch.dtype | None:
        """The dtype ``key`` holds once filled from the checkpoint (``None`` while the stored dtype
        is not known)."""
        stored = self.fills[key].dtype
        if stored is None:
            return None
        cast = self.cast(key, stored)
        if cast is not None:
            return cast
        current = self.slots.current(key)
        return stored if current.is_meta else current.dtype

    def check_shapes(self, stored: Mapping[str, Sequence[int]] | None = None) -> None:
        """Raise, before anything is loaded, when a checkpoint tensor's shape differs from the module's.

        Args:
            stored: module key -> checkpoint shape for the keys whose shapes the headers did not
                give (torch shards, once loaded); default: the planned shapes.

        Raises:
            ModelMismatchError: naming the first five tensors that differ.
        """
        shapes: dict[str, Sequence[int]] = {
            name: tensor.shape for name, tensor in self.fills.items() if tensor.shape is not None
        }
        shapes.update(stored or {})
        wrong = [
            f"{name}: checkpoint {tuple(shape)} vs model {tuple(self.slots.current(name).shape)}"
            for name, shape in shapes.items()
            if name in self.slots and tuple(self.slots.current(name).shape) != tuple(shape)
        ]
        if wrong:
            raise ModelMismatchError(
                f"{len(wrong)} tensors have other shapes than the model's: {'; '.join(wrong[:5])}",
                path=self.where,
                fix="build the model from the config.json saved with these weights",
            )


def model_keep_in_fp32(model: nn.Module, keep_in_fp32: Iterable[str] | None) -> tuple[str, ...]:
    """The modules kept in float32: ``keep_in_fp32`` when given (an empty list keeps none), else
    the model's ``_keep_in_fp32_modules``."""
    if keep_in_fp32 is None:
        keep_in_fp32 = getattr(model, "_keep_in_fp32_modules", None) or ()
    if isinstance(keep_in_fp32, str):
        keep_in_fp32 = (keep_in_fp32,)
    return tuple(keep_in_fp32)


def plan_module_fill(
    model: nn.Module | ModuleSlots,
    stored: Iterable[StoredTensor],
    *,
    prefix: str | None = None,
    strip_prefixes: Sequence[str] | str | None = None,
    dtype: torch.dtype | None = None,
    keep_in_fp32: Iterable[str] | None = None,
    strict: bool = True,
    where: str | os.PathLike[str] | None = None,
) -> FillPlan:
    """Plan filling ``model`` from the checkpoint tensors ``stored``; raises before anything is read.

    Args:
        model: the module (or its :class:`ModuleSlots`).
        stored: the checkpoint's tensors, in checkpoint order.
        prefix: keep only checkpoint keys under this prefix, and strip it.
        strip_prefixes: wrapper prefixes removed first, repeatedly (nested wrappers).
        dtype: cast floating tensors to this dtype.
        keep_in_fp32: module names kept float32 under ``dtype`` (matched by whole dotted parts, see
            :func:`ckptkit.format.keys.in_modules`); ``None``: the model's ``_keep_in_fp32_modules``.
        strict: raise when keys are missing or unexpected.
        where: the checkpoint, for messages.

    Raises:
        AmbiguousCheckpointError: two checkpoint keys get the same name after the prefixes go.
        ModelMismatchError: ``strict`` and keys are missing or unexpected, or a shape differs.

    Example:
        >>> plan = plan_module_fill(torch.nn.Linear(2, 2), [StoredTensor("module.weight", (2, 2))],
        ...                         strip_prefixes="module.", strict=False)
        >>> plan.result
        LoadResult(missing_keys=['bias'], unexpected_keys=[])
    """
    slots = model if isinstance(model, ModuleSlots) else ModuleSlots(model)
    by_key = {tensor.key: tensor for tensor in stored}
    selection = select_keys(by_key, prefix=prefix, strip_prefixes=strip_prefixes, where=where)
    fills: dict[str, StoredTensor] = {}
    covered: set[str] = set()
    unexpected = []
    for name, source in selection.items():
        if name not in slots:
            unexpected.append(name)
            continue
        aliases = slots.aliases(name)
        if not covered.intersection(aliases):
            fills[name] = by_key[source]
        covered.update(aliases)
    missing = [key for key in slots if key not in covered]
    if strict and (missing or unexpected):
        raise ModelMismatchError(
            f"checkpoint and model do not match: {len(missing)} missing keys {_listing(missing)}, "
            f"{len(unexpected)} unexpected keys {_listing(unexpected)}",
            path=where,
            fix="pass prefix=/strip_prefixes= to map the names, or strict=False to load what matches",
        )
    plan = FillPlan(
        slots=slots,
        selection=selection,
        fills=fills,
        missing_keys=missing,
        unexpected_keys=unexpected,
        dtype=dtype,
        keep_in_fp32=model_keep_in_fp32(slots.module, keep_in_fp32) if dtype is not None else (),
        where=where,
    )
    plan.check_shapes()
    return plan


def _listing(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:8])
    return f"[{shown}{', ...' if len(keys) > 8 else ''}]"
