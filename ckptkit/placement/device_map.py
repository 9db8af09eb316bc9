"""A device map from a checkpoint's headers alone: the torch-free view of :mod:`ckptkit.placement.dispatch`.

:func:`plan_device_map` runs the same greedy walk as accelerate's ``infer_auto_device_map`` (and
``get_balanced_memory`` for ``"auto"``/``"balanced"``), on a module tree rebuilt from tensor
names, with sizes from the safetensors headers (or the pickle of a torch zip) — no torch, no
weights read. Two things a file does not say are guessed:

- the order modules are defined in: shards are written in definition order, so a module's first
  shard leads; inside a shard, embedding-like names come first and head/output-like names last;
- which modules must stay whole: by default every outermost numbered block (``layers.3``,
  ``transformer_blocks.0``), which is what ``_no_split_modules`` names in transformers and
  diffusers models (:func:`~ckptkit.format.keys.block_of`: the rule ``plan_memory`` counts by too).

Where both guesses match the model (most transformers and DiT checkpoints), the map equals the one
:func:`ckptkit.placement.dispatch.infer_device_map` builds from the real model, so it can be printed by the
CLI, edited, and passed back as ``device_map=``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.dtypes import DTYPES, canonical_dtype
from ckptkit.format.safetensors_header import read_header
from ckptkit.format.sizes import format_size, parse_size
from ckptkit.format.torch_pickle import scan_torch_file
from ckptkit.placement.greedy import (
    ModuleTree,
    TensorEntry,
    balanced_memory,
    clean_device_map,
    expand_device_map,
    greedy_device_map,
)
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = [
    "DevicePlan",
    "TensorEntry",
    "checkpoint_tensors",
    "clean_device_map",
    "expand_device_map",
    "normalize_max_memory",
    "parse_max_memory",
    "plan_device_map",
]

DEVICE_MAP_MODES = ("auto", "balanced", "balanced_low_0", "sequential")


@dataclass
class DevicePlan:
    """A device map planned from headers.

    Attributes:
        device_map: module name -> device (int GPU index, ``"cpu"`` or ``"disk"``), as accelerate
            writes it (cleaned: a module whose parts all share a device is one entry).
        max_memory: the per-device budgets used (bytes; after balancing for ``"auto"``).
        bytes_per_device: bytes of weights placed on each device.
        total_bytes: bytes of all weights in the held dtype.
        dtype: the dtype sizes were computed in (``None``: as stored).
    """

    device_map: dict[str, int | str]
    max_memory: dict[int | str, int]
    bytes_per_device: dict[int | str, int]
    total_bytes: int
    dtype: str | None = None
    no_split: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``device_map`` can be passed back as ``device_map=``."""
        return {
            "device_map": dict(self.device_map),
            "max_memory": {str(k): v for k, v in self.max_memory.items()},
            "bytes_per_device": {str(k): v for k, v in self.bytes_per_device.items()},
            "total_bytes": self.total_bytes,
            "dtype": self.dtype,
        }

    def format(self) -> str:
        """Human-readable lines: one per device, then the map."""
        lines = [f"total {format_size(self.total_bytes)}" + (f" in {self.dtype}" if self.dtype else "")]
        for device, used in self.bytes_per_device.items():
            budget = self.max_memory.get(device)
            limit = f" of {format_size(budget)}" if budget is not None and device != "disk" else ""
            lines.append(f"  {device!s:>5}: {format_size(used)}{limit}")
        width = max((len(name) for name in self.device_map), default=1) or 1
        lines.extend(f"  {name or '(all)':<{width}}  {device}" for name, device in self.device_map.items())
        return "\n".join(lines)


def parse_max_memory(text: str) -> dict[int | str, int]:
    """``"0=20GiB,1=20GiB,cpu=64GiB"`` -> ``{0: 21474836480, 1: ..., "cpu": ...}`` (the CLI form).

    Raises:
        ValueError: an entry is not ``DEVICE=SIZE``.

    Example:
        >>> parse_max_memory("0=1GiB,cpu=2GB")
        {0: 1073741824, 'cpu': 2000000000}
    """
    pairs = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"max memory entry {item!r} is not DEVICE=SIZE (e.g. 0=20GiB or cpu=64GiB)")
        pairs[key.strip()] = value.strip()
    return normalize_max_memory(pairs)


def normalize_max_memory(max_memory: Mapping[Any, int | str]) -> dict[int | str, int]:
    """Budgets with int GPU keys (``"0"``, ``"cuda:0"`` -> ``0``) and byte values, GPUs first.

    Raises:
        ValueError: an unknown device or a bad size.

    Example:
        >>> normalize_max_memory({"cpu": "1GiB", "0": 512})
        {0: 512, 'cpu': 1073741824}
    """
    out: dict[int | str, int] = {}
    for key, value in max_memory.items():
        device: int | str = str(key)
        if isinstance(key, int) and not isinstance(key, bool):
            device = key
        elif re.fullmatch(r"(cuda:)?\d+", str(key)):
            device = int(str(key).rpartition(":")[2])
        elif device not in ("cpu", "disk", "mps"):
            raise ValueError(
                f"max_memory key {key!r} is no device: use GPU indices (0, 1, ...), 'cpu' or 'disk'"
            )
        out[device] = parse_size(value)
    gpus = sorted(k for k in out if isinstance(k, int))
    return {k: out[k] for k in [*gpus, *(d for d in ("mps", "cpu", "disk") if d in out)]}


def checkpoint_tensors(ckpt: CheckpointDir) -> list[TensorEntry]:
    """Every tensor of a resolved checkpoint, from headers only, in file order.

    Raises:
        CorruptCheckpointError: a tensor is stored twice, or a torch file is not a zip (its
            contents cannot be listed without torch).
    """
    entries: dict[str, TensorEntry] = {}
    for position, path in enumerate(ckpt.weight_files):
        if ckpt.format == "safetensors":
            header = read_header(path)
            found: Iterable[tuple[str, str, tuple[int, ...]]] = (
                (t.name, DTYPES[t.dtype].name, t.shape) for t in header.tensors.values()
            )
        else:
            scanned = scan_torch_file(path)
            if scanned is None:
                raise CorruptCheckpointError(
                    "is a legacy (pre-zip) torch file; its tensors cannot be listed without torch",
                    path=path,
                    fix="re-save it with `ckptkit resave` (safetensors) to plan placement from headers",
                )
            # tied weights saved by torch.save share one storage: count them once, as accelerate does
            unique: dict[tuple[str, tuple[int, ...]], Any] = {}
            for entry in scanned.values():
                unique.setdefault((entry.storage_key, entry.shape), entry)
            found = ((e.name, e.dtype, e.shape) for e in unique.values())
        for name, dtype, shape in found:
            if name in entries:
                raise CorruptCheckpointError(
                    f"tensor {name!r} is stored twice",
                    path=path,
                    fix="re-save the checkpoint (ckptkit resave)",
                )
            entries[name] = TensorEntry(name, dtype, shape, position)
    return list(entries.values())


def plan_device_map(
    spec: str | os.PathLike[str] | CheckpointDir,
    *,
    max_memory: Mapping[Any, int | str] | str,
    device_map: str = "auto",
    dtype: object = None,
    no_split_prefixes: Sequence[str] | None = None,
    **resolve_kwargs: Any,
) -> DevicePlan:
    """Plan where each module of a checkpoint goes, from its headers alone (torch is not imported).

    Args:
        spec: anything :func:`ckptkit.resolve_ckpt_dir` accepts.
        max_memory: budgets, ``{0: "20GiB", "cpu": "64GiB"}`` or ``"0=20GiB,cpu=64GiB"``; what does
            not fit goes to ``"disk"``.
        device_map: ``"auto"``/``"balanced"`` (spread evenly over the GPUs), ``"balanced_low_0"``,
            or ``"sequential"`` (fill GPU 0 first).
        dtype: the dtype the model will hold (``"bf16"``); ``None``: as stored.
        no_split_prefixes: modules kept whole: a name (``"pos_embed"``) keeps that module whole; a
            container (``"model.layers"``) keeps each of its numbered children whole. Default: every
            outermost numbered block.
        resolve_kwargs: ``subfolder``, ``variant``, ... for :func:`ckptkit.resolve_ckpt_dir`.

    Returns:
        The :class:`DevicePlan`; ``plan.device_map`` can be passed to ``load_sharded(device_map=)``.

    Raises:
        ValueError: a bad ``max_memory``, ``dtype`` or ``device_map``.
        CkptError: the checkpoint cannot be resolved or its headers are damaged.

    Example:
        >>> plan = plan_device_map("./wan/transformer", max_memory="0=20GiB,cpu=64GiB")  # doctest: +SKIP
        >>> plan.device_map  # doctest: +SKIP
        {'patch_embedding': 0, ..., 'blocks.27': 'cpu', ..., 'head': 'cpu'}
    """

    if device_map not in DEVICE_MAP_MODES:
        raise ValueError(f"device_map must be one of {DEVICE_MAP_MODES} to plan, not {device_map!r}")
    ckpt = resolve_ckpt_dir(spec, **resolve_kwargs).require_single()
    held = canonical_dtype(dtype) if dtype is not None else _selection_cast(ckpt)
    budgets = (
        parse_max_memory(max_memory) if isinstance(max_memory, str) else normalize_max_memory(max_memory)
    )
    tree = ModuleTree.from_entries(checkpoint_tensors(ckpt), held, no_split_prefixes)
    if device_map != "sequential":
        budgets = balanced_memory(tree, budgets, low_zero=device_map == "balanced_low_0")
    placed, used = greedy_device_map(tree, budgets)
    return DevicePlan(
        device_map=placed,
        max_memory=budgets,
        bytes_per_device=used,
        total_bytes=tree.sizes.get("", 0),
        dtype=held,
        no_split=sorted(tree.no_split),
    )


def _selection_cast(ckpt: CheckpointDir) -> str | None:
    return ckpt.selection.cast_dtype if ckpt.selection is not None else None
