"""Filling an ``nn.Module``'s parameters and buffers in place, also one built on the meta device.

A materialized parameter of the right dtype and device is filled in its own storage (no extra
copy). Anything else — a meta parameter, a dtype or device change — gets a fresh tensor that is
filled and then assigned, to every name it is tied under, so tied weights stay tied.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["ModuleSlots", "Placement"]


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

    Example:
        >>> slots = ModuleSlots(torch.nn.Linear(2, 2))
        >>> sorted(slots.keys())
        ['bias', 'weight']
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
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
