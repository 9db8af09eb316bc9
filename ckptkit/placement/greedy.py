"""accelerate's device-map walk on a module tree rebuilt from tensor names, without torch.

The functions mirror accelerate's ``utils/modeling.py`` (``infer_auto_device_map``,
``get_balanced_memory``, ``get_max_layer_size``, ``clean_device_map``) step for step, on a
:class:`ModuleTree` instead of an ``nn.Module``, so a map planned from headers is the map accelerate
would make wherever the tree matches the model (see :mod:`ckptkit.placement.device_map`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ckptkit.format.dtypes import nbytes_of
from ckptkit.format.keys import block_of

__all__ = [
    "ModuleTree",
    "TensorEntry",
    "balanced_memory",
    "clean_device_map",
    "expand_device_map",
    "greedy_device_map",
    "max_layer_size",
]

_INPUT_LIKE = re.compile(
    r"emb|shared|wte|wpe|patch|pos_|conv_in|stem|tok|time|text|caption|context|adaln|input"
)
_OUTPUT_LIKE = re.compile(r"head|_out$|^out|final|ln_f|norm_out|conv_out|proj_out")


@dataclass(frozen=True)
class TensorEntry:
    """One stored tensor, as a header describes it.

    Attributes:
        name: its key in the checkpoint.
        dtype: torch dtype name (``"bfloat16"``).
        shape: the shape.
        file_index: position of its file in ``CheckpointDir.weight_files`` (definition order).
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    file_index: int

    @property
    def numel(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count

    @property
    def floating(self) -> bool:
        return self.dtype.startswith(("float", "bfloat"))

    def held_bytes(self, dtype: str | None) -> int:
        """Bytes it takes once loaded: floating tensors in ``dtype`` when given, others as stored."""
        target = dtype if dtype is not None and self.floating else self.dtype
        return nbytes_of(self.numel, target)


def _natural(text: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", text) if p)


@dataclass
class ModuleTree:
    """Modules rebuilt from dotted tensor names: sizes of every prefix, ordered children, blocks.

    ``sizes`` has accelerate's ``compute_module_sizes`` shape: ``""`` is the whole model, every
    module prefix and every tensor name has its byte count.
    """

    sizes: dict[str, int]
    children: dict[str, list[str]]
    tensors: set[str]
    no_split: set[str]

    @classmethod
    def from_entries(
        cls, entries: Sequence[TensorEntry], dtype: str | None, no_split_prefixes: Sequence[str] | None
    ) -> ModuleTree:
        sizes: dict[str, int] = {}
        first_file: dict[str, int] = {}
        children: dict[str, list[str]] = {}
        for entry in entries:
            parts = entry.name.split(".")
            size = entry.held_bytes(dtype)
            for depth in range(len(parts) + 1):
                prefix = ".".join(parts[:depth])
                sizes[prefix] = sizes.get(prefix, 0) + size
                first_file[prefix] = min(first_file.get(prefix, entry.file_index), entry.file_index)
                if depth:
                    siblings = children.setdefault(".".join(parts[: depth - 1]), [])
                    if prefix not in siblings:
                        siblings.append(prefix)
        tensors = {e.name for e in entries}

        def order(name: str) -> tuple[Any, ...]:
            leaf = name.rpartition(".")[2]
            role = 0 if _INPUT_LIKE.search(leaf) else 2 if _OUTPUT_LIKE.search(leaf) else 1
            # accelerate lists a module's own tensors before its submodules
            return (name not in tensors or name in children, first_file[name], role, _natural(leaf))

        for siblings in children.values():
            siblings.sort(key=order)
        return cls(sizes, children, tensors, _no_split_modules(children, tensors, no_split_prefixes))

    def is_layer(self, name: str) -> bool:
        """No submodules (only tensors), or kept whole: what ``get_max_layer_size`` counts."""
        kids = self.children.get(name, [])
        return name in self.no_split or all(k not in self.children for k in kids)

    def splittable(self, name: str) -> bool:
        """Has submodules and is not kept whole (a module of tensors only is never split)."""
        kids = self.children.get(name, [])
        return name not in self.no_split and any(k in self.children for k in kids)

    def split(self, name: str) -> list[str]:
        """Children of a split module: its own tensors, then its submodules (accelerate's order)."""
        kids = self.children[name]
        return [k for k in kids if k not in self.children] + [k for k in kids if k in self.children]


def _no_split_modules(
    children: Mapping[str, list[str]], tensors: set[str], prefixes: Sequence[str] | None
) -> set[str]:
    if prefixes is None:  # every outermost numbered module: the one block rule
        return {block for block in map(block_of, tensors) if block is not None}
    modules = set(children) - {""}
    wanted = [p.rstrip(".") for p in prefixes]
    out = set()
    for name in modules:
        parent, _, leaf = name.rpartition(".")
        if name in wanted or (leaf.isdigit() and parent in wanted):
            out.add(name)
    return out


def max_layer_size(tree: ModuleTree, names: Sequence[str]) -> tuple[int, list[str]]:
    """accelerate's ``get_max_layer_size`` on the tree: the largest layer among ``names``."""
    best, best_names = 0, []
    queue = list(names)
    while queue:
        name = queue.pop(0)
        if tree.is_layer(name):
            size = tree.sizes[name]
            if size > best:
                best, best_names = size, [name]
            elif size == best:
                best_names.append(name)
        else:
            queue = list(tree.children[name]) + queue
    return best, best_names


def greedy_device_map(
    tree: ModuleTree, max_memory: Mapping[int | str, int]
) -> tuple[dict[str, int | str], dict[int | str, int]]:
    """accelerate's ``infer_auto_device_map`` walk (no tied weights: headers hold each tensor once)."""
    devices: list[int | str] = list(max_memory)
    if "disk" not in devices:
        devices.append("disk")
    gpus = [d for d in devices if d not in ("cpu", "disk")]
    main = ["mps"] if "mps" in gpus else [gpus[0], "cpu"] if gpus else ["cpu"]
    queue = tree.split("")
    device_map: dict[str, int | str] = {}
    used: dict[int | str, int] = dict.fromkeys(devices, 0)
    current = 0
    largest, largest_names = max_layer_size(tree, queue)
    while queue:
        name = queue.pop(0)
        largest_names = [n for n in largest_names if n != name and not n.startswith(name + ".")]
        if not largest_names:
            largest, largest_names = max_layer_size(tree, [n for n in queue if n in tree.children])
        size = tree.sizes[name]
        device = devices[current]
        limit = None if device == "disk" else max_memory[device]
        reserved = 0
        if limit is not None and device in main:
            limit -= largest
            reserved = largest
        if limit is None or used[device] + size <= limit:
            used[device] += size
            device_map[name] = device
            continue
        if tree.splittable(name):
            queue = tree.split(name) + queue
            largest, largest_names = max_layer_size(tree, [n for n in queue if n in tree.children])
            continue
        used[device] += reserved
        current += 1
        queue.insert(0, name)
    placed: dict[int | str, int] = {}
    for name, device in device_map.items():
        placed[device] = placed.get(device, 0) + tree.sizes[name]
    return clean_device_map(device_map), placed


def clean_device_map(device_map: dict[str, Any], module_name: str = "") -> dict[str, Any]:
    """Merge entries whose parts all share one device (accelerate's ``clean_device_map``)."""
    prefix = f"{module_name}." if module_name else ""
    values = [v for k, v in device_map.items() if k.startswith(prefix)]
    if len(set(values)) == 1 and len(values) > 1:
        for key in [k for k in device_map if k.startswith(prefix)]:
            del device_map[key]
        device_map[module_name] = values[0]
    depth = len(module_name.split(".")) + 1 if module_name else 1
    found = {
        ".".join(k.split(".")[:depth])
        for k in device_map
        if k.startswith(prefix) and len(k) > len(module_name)
    }
    for child in found:
        clean_device_map(device_map, module_name=child)
    return device_map


def expand_device_map(device_map: Mapping[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Tensor name -> device under ``device_map`` (longest matching module prefix), to compare maps.

    Example:
        >>> expand_device_map({"a": "cpu", "a.b": "disk"}, ["a.b.weight", "a.c.weight"])
        {'a.b.weight': 'disk', 'a.c.weight': 'cpu'}
    """
    out = {}
    for name in names:
        parts = name.split(".")
        for depth in range(len(parts), -1, -1):
            prefix = ".".join(parts[:depth])
            if prefix in device_map:
                out[name] = device_map[prefix]
                break
    return out


def balanced_memory(
    tree: ModuleTree, max_memory: Mapping[int | str, int], *, low_zero: bool
) -> dict[int | str, int]:
    """accelerate's ``get_balanced_memory``: cap each GPU but the last near an even share."""
    budgets = dict(max_memory)
    gpus = sorted(k for k, v in budgets.items() if isinstance(k, int) and v > 0)
    if not gpus:
        return budgets
    if len(gpus) == 1:
        low_zero = False
    total = tree.sizes.get("", 0)
    per_gpu = total // (len(gpus) - 1 if low_zero else len(gpus))
    # the first block of each numbered family stands for its class, as accelerate's first instance does
    firsts = [name for name in tree.no_split if name.rpartition(".")[2] == "0"] or sorted(tree.no_split)
    buffer = max((tree.sizes[n] for n in firsts), default=0)
    modules = {n: s for n, s in tree.sizes.items() if n and n in tree.children}
    leaves = [n for n in modules if not any(k in tree.children for k in tree.children[n])]
    mean_leaves = int(sum(modules[n] for n in leaves) / max(len(leaves), 1))
    per_gpu += int(1.25 * max(buffer, mean_leaves))
    for idx in gpus[:-1]:
        budgets[idx] = min(budgets[0] if low_zero and idx == 0 else per_gpu, budgets[idx])
    if low_zero:
        budgets[0] = min(max(0, total - sum(budgets[i] for i in range(1, len(gpus)))), budgets[0])
    return budgets
