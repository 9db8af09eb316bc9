"""A device map from a checkpoint's headers alone: the torch-free view of :mod:`ckptkit.placement`.

:func:`plan_device_map` runs the same greedy walk as accelerate's ``infer_auto_device_map`` (and
``get_balanced_memory`` for ``"auto"``/``"balanced"``), on a module tree rebuilt from tensor
names, with sizes from the safetensors headers (or the pickle of a torch zip) — no torch, no
weights read. Two things a file does not say are guessed:

- the order modules are defined in: shards are written in definition order, so a module's first
  shard leads; inside a shard, embedding-like names come first and head/output-like names last;
- which modules must stay whole: by default every outermost numbered block (``layers.3``,
  ``transformer_blocks.0``), which is what ``_no_split_modules`` names in transformers and
  diffusers models.

Where both guesses match the model (most transformers and DiT checkpoints), the map equals the one
:func:`ckptkit.placement.infer_device_map` builds from the real model, so it can be printed by the
CLI, edited, and passed back as ``device_map=``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ckptkit.checkpoint import CheckpointDir
from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.dtypes import DTYPES, canonical_dtype
from ckptkit.format.safetensors_header import read_header
from ckptkit.format.sizes import format_size, parse_size
from ckptkit.format.torch_pickle import scan_torch_file

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
_BYTES = {d.name: max(d.bits // 8, 1) for d in DTYPES.values()}
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
        return self.numel * _BYTES.get(target, 4)


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
    from ckptkit.resolve import resolve_ckpt_dir

    if device_map not in DEVICE_MAP_MODES:
        raise ValueError(f"device_map must be one of {DEVICE_MAP_MODES} to plan, not {device_map!r}")
    ckpt = resolve_ckpt_dir(spec, **resolve_kwargs)
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
        return cls(sizes, children, tensors, _no_split_modules(sizes, children, no_split_prefixes))

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
    sizes: Mapping[str, int], children: Mapping[str, list[str]], prefixes: Sequence[str] | None
) -> set[str]:
    modules = set(children) - {""}
    if prefixes is None:
        blocks = set()
        for name in modules:
            parts = name.split(".")
            numbered = [i for i, p in enumerate(parts) if p.isdigit()]
            if numbered:
                blocks.add(".".join(parts[: numbered[0] + 1]))
        return blocks
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
