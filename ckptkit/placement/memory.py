"""``plan_memory``: will these weights fit on these devices? From safetensors headers alone.

The arithmetic, for ``N`` devices of ``M`` bytes each, weights of ``W`` bytes (at the target dtype),
the largest wrapped block ``B`` (all tensors under one ``blocks.N.`` / ``layers.N.`` /
``transformer_blocks.N.`` prefix) and the rest ``R = W - sum(blocks)`` (embeddings, heads, norms):

============  ==========================  ==================================  ==============
strategy      resident per device          peak per device                      host memory
============  ==========================  ==================================  ==============
replicate     ``W``                        ``W``                                ``0``
fsdp          ``ceil(W / N)``              ``ceil(W / N) + R + B``              ``0``
offload       ``R``                        ``R + B``                            ``W``
============  ==========================  ==================================  ==============

FSDP keeps one shard of every tensor on each device; the forward gathers the root unit (``R``,
everything outside the blocks) and then one block at a time, each gathered into a full-size
buffer beside the shards. With one device FSDP does not shard (``fsdp`` = ``replicate``). Offload
keeps ``R`` on the device and streams blocks in from host memory one at a time. Activations,
optimizer state and the CUDA context are not counted: the headroom is what is left for them.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

from ckptkit.errors import CkptError
from ckptkit.format.display import html_table, summary_line, text_table
from ckptkit.format.dtypes import DTYPES, canonical_dtype, nbytes_of
from ckptkit.format.keys import block_of
from ckptkit.format.safetensors_header import TensorInfo
from ckptkit.format.sizes import format_size, parse_size
from ckptkit.format.validate import check_weight_set
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = ["STRATEGIES", "BlockSize", "MemoryPlan", "StrategyEstimate", "find_blocks", "plan_memory"]

STRATEGIES = ("replicate", "fsdp", "offload")


@dataclass
class BlockSize:
    """One wrapped block: its key prefix (``"transformer_blocks.7"``), tensor count and bytes."""

    name: str
    tensors: int
    bytes: int


@dataclass
class StrategyEstimate:
    """Per-device memory for the weights under one strategy.

    Attributes:
        strategy: ``"replicate"``, ``"fsdp"`` or ``"offload"``.
        resident_bytes: weights that stay on each device between forwards.
        unshard_bytes: what is gathered or streamed in on top while the forward runs.
        peak_bytes: ``resident_bytes + unshard_bytes``.
        host_bytes: host (CPU) memory holding the weights, per process.
        fits: ``peak_bytes <= device_memory``.
        headroom_bytes: ``device_memory - peak_bytes`` (negative when it does not fit).
    """

    strategy: str
    resident_bytes: int
    unshard_bytes: int
    peak_bytes: int
    host_bytes: int
    fits: bool
    headroom_bytes: int


@dataclass(repr=False)
class MemoryPlan:
    """What :func:`plan_memory` computed.

    Attributes:
        path: the directory of the weights planned for.
        weight_files: the files the numbers come from.
        devices: number of devices.
        device_memory: bytes per device.
        dtype: the target dtype (``None``: as stored).
        parameter_count: elements in all tensors.
        weights_bytes: ``W``, bytes of all tensors at the target dtype.
        blocks: the wrapped blocks found, in key order.
        largest_block: the largest of them (``None`` when no block pattern matched).
        other_bytes: ``R``, bytes outside every block.
        strategy: the strategy asked for.
        estimates: strategy -> :class:`StrategyEstimate`, for all three strategies.
        weight_set: the weight set planned for (``diffusion_pytorch_model.safetensors.index.json
            (4 shards, safetensors)``).
        passed_over: other, unrelated weight sets in the same directory that the plan does not
            count (a text encoder's ``.pth`` beside a transformer's shards).
    """

    path: str
    weight_files: list[str]
    devices: int
    device_memory: int
    dtype: str | None
    parameter_count: int
    weights_bytes: int
    blocks: list[BlockSize]
    largest_block: BlockSize | None
    other_bytes: int
    strategy: str
    estimates: dict[str, StrategyEstimate] = field(default_factory=dict)
    weight_set: str | None = None
    passed_over: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> StrategyEstimate:
        return self.estimates[self.strategy]

    @property
    def fits(self) -> bool:
        """Whether the chosen strategy fits."""
        return self.chosen.fits

    @property
    def headroom_bytes(self) -> int:
        return self.chosen.headroom_bytes

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; its keys are stable for scripts (``blocks`` holds the count only)."""
        result = asdict(self)
        result["blocks"] = len(self.blocks)
        result.update(fits=self.fits, headroom_bytes=self.headroom_bytes)
        return result

    @property
    def fitting(self) -> list[str]:
        """The strategies that fit, in the order replicate, fsdp, offload."""
        return [name for name, estimate in self.estimates.items() if estimate.fits]

    def __repr__(self) -> str:
        verdict = "fits" if self.fits else "does NOT fit"
        also = f" (fits: {', '.join(self.fitting)})" if not self.fits and self.fitting else ""
        return summary_line(
            "MemoryPlan",
            self.path,
            [
                f"{format_size(self.weights_bytes)} weights ({self.dtype or 'stored dtypes'})",
                f"{self.devices} x {format_size(self.device_memory)}",
                f"{self.strategy} {verdict}{also}",
            ],
        )

    def __str__(self) -> str:
        return text_table(f"MemoryPlan {self.path}", self._rows(nested=False))

    def _repr_html_(self) -> str:
        return html_table(
            f"MemoryPlan {self.path}",
            self._rows(nested=True),
            columns=["strategy", "resident", "+ unshard", "= peak", "host", "headroom", "fits"],
        )

    def _rows(self, *, nested: bool) -> list[tuple[str, object]]:
        table = [
            (
                ("* " if name == self.strategy else "") + name,
                format_size(e.resident_bytes),
                format_size(e.unshard_bytes),
                format_size(e.peak_bytes),
                format_size(e.host_bytes),
                ("-" if e.headroom_bytes < 0 else "") + format_size(abs(e.headroom_bytes)),
                "yes" if e.fits else "NO",
            )
            for name, e in self.estimates.items()
        ]
        block = self.largest_block
        return [
            ("weight set", self.weight_set),
            *([("not counted", self.passed_over)] if self.passed_over else []),
            ("weights", f"{format_size(self.weights_bytes)} ({self.parameter_count:,} parameters)"),
            ("dtype", self.dtype or "as stored"),
            ("devices", f"{self.devices} x {format_size(self.device_memory)}"),
            ("largest block", f"{block.name} {format_size(block.bytes)}" if block else "none found"),
            ("strategies", table if nested else [" ".join(row) for row in table]),
            ("fits", ", ".join(self.fitting) or "nothing"),
        ]


def plan_memory(
    spec: str | os.PathLike[str],
    *,
    devices: int = 1,
    device_memory: int | str,
    dtype: object = None,
    strategy: str | None = None,
    variant: str | None = None,
    **resolve_kwargs: object,
) -> MemoryPlan:
    """Per-device memory for a checkpoint's weights, from its safetensors headers (no weights read).

    Args:
        spec: a checkpoint directory or weights file (or any form :func:`resolve_ckpt_dir` accepts).
        devices: number of devices (GPUs) to spread over.
        device_memory: memory of one device: bytes or a size string (``"24GiB"``, ``"80GB"``).
        dtype: the dtype the weights will have on the device (``"bf16"``, ``torch.float16``);
            ``None`` keeps the stored dtypes. Only floating tensors are converted.
        strategy: ``"replicate"``, ``"fsdp"`` or ``"offload"``. All three are estimated; this one
            decides ``fits``. Default: ``"fsdp"`` for several devices, else ``"replicate"`` -- or,
            when that does not fit, the first of replicate, fsdp, offload that does.
        variant: the variant a load would use.
        resolve_kwargs: passed to :func:`resolve_ckpt_dir` (``subfolder``, ``revision``, ...).

    Returns:
        The :class:`MemoryPlan`.

    Raises:
        ValueError: ``devices < 1``, an unknown strategy, dtype or size.
        CkptError: the checkpoint is damaged, or holds torch pickles (whose tensor sizes need
            torch to read; resave them as safetensors first).

    Example:
        >>> plan = plan_memory("Wan2.1-T2V-14B", devices=5, device_memory="24GiB", dtype="bf16")  # doctest: +SKIP
        >>> plan.fits, plan.chosen.peak_bytes  # doctest: +SKIP
        (True, 6437234688)
    """

    if devices < 1:
        raise ValueError(f"devices must be at least 1, not {devices}")
    preferred = strategy or ("fsdp" if devices > 1 else "replicate")
    if preferred not in STRATEGIES:
        raise ValueError(f"unknown strategy {preferred!r}; use one of {', '.join(STRATEGIES)}")
    memory = parse_size(device_memory)
    ckpt = resolve_ckpt_dir(spec, variant=variant, variant_fallback="allow", **resolve_kwargs)  # type: ignore[arg-type]
    ckpt.require_single()
    if ckpt.format != "safetensors" or ckpt.weight_set is None:
        raise CkptError(
            "holds torch pickle files; their tensor sizes cannot be read without unpickling them",
            path=ckpt.weight_files[0] if ckpt.weight_files else ckpt.path,
            fix="resave it as safetensors first (ckptkit resave SRC DST)",
        )
    check = check_weight_set(ckpt.weight_set)
    check.raise_first()
    if dtype is None and ckpt.selection is not None and ckpt.selection.cast_dtype:
        dtype = ckpt.selection.cast_dtype
    target = canonical_dtype(dtype) if dtype is not None else None
    tensors = [t for header in check.headers.values() for t in header.tensors.values()]
    sizes = {t.name: _bytes_at(t, target) for t in tensors}
    blocks = find_blocks(sizes)
    weights = sum(sizes.values())
    other = weights - sum(b.bytes for b in blocks)
    largest = max(blocks, key=lambda b: b.bytes, default=None)
    plan = MemoryPlan(
        path=str(ckpt.path),
        weight_files=[str(p) for p in ckpt.weight_files],
        devices=devices,
        device_memory=memory,
        dtype=target,
        parameter_count=sum(t.numel for t in tensors),
        weights_bytes=weights,
        blocks=blocks,
        largest_block=largest,
        other_bytes=other,
        strategy=preferred,
        weight_set=ckpt.weight_set.label,
        passed_over=[s.label for s in ckpt.selection.passed_over] if ckpt.selection else [],
    )
    block = largest.bytes if largest else 0
    plan.estimates = {
        "replicate": _estimate("replicate", weights, 0, 0, memory),
        "fsdp": (
            _estimate("fsdp", math.ceil(weights / devices), other + block, 0, memory)
            if devices > 1
            else _estimate("fsdp", weights, 0, 0, memory)
        ),
        "offload": _estimate("offload", other, block, weights, memory),
    }
    if strategy is None and not plan.estimates[preferred].fits:
        # Not asked for one: choose the first that fits (replicate, fsdp, offload) over one that does not.
        plan.strategy = next((name for name, e in plan.estimates.items() if e.fits), preferred)
    return plan


def find_blocks(sizes: dict[str, int]) -> list[BlockSize]:
    """Group tensor bytes by their outermost repeated block (``blocks.N``, ``layers.N``, ...; see
    :func:`~ckptkit.format.keys.block_of`, the rule the header-only device map uses too).

    Args:
        sizes: tensor name -> bytes.

    Returns:
        The blocks in order of first appearance; tensors outside every block are not included.

    Example:
        >>> [(b.name, b.bytes) for b in find_blocks({"blocks.0.a": 4, "blocks.0.b": 4, "blocks.1.a": 4, "head": 2})]
        [('blocks.0', 8), ('blocks.1', 4)]
    """
    blocks: dict[str, BlockSize] = {}
    for name, nbytes in sizes.items():
        prefix = block_of(name)
        if prefix is None:
            continue
        block = blocks.setdefault(prefix, BlockSize(prefix, 0, 0))
        block.tensors += 1
        block.bytes += nbytes
    return list(blocks.values())


def _bytes_at(tensor: TensorInfo, target: str | None) -> int:
    info = DTYPES[tensor.dtype]
    if target is None or not info.floating:
        return tensor.nbytes
    return nbytes_of(tensor.numel, target)


def _estimate(strategy: str, resident: int, unshard: int, host: int, memory: int) -> StrategyEstimate:
    peak = resident + unshard
    return StrategyEstimate(strategy, resident, unshard, peak, host, peak <= memory, memory - peak)
