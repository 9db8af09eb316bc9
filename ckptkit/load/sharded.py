"""``load_sharded``: any checkpoint into a dict of tensors or straight into a module.

The steps, each owned by a lower floor: resolve the directory and pick the weight set by the
variant rules (:func:`ckptkit.resolve.resolve.resolve_ckpt_dir`), validate the index and every needed
header before reading a byte of tensor data (:func:`ckptkit.format.validate.check_weight_set`),
choose keys (:mod:`ckptkit.load.keys`), decide where each tensor lands (:mod:`ckptkit.io.module_fill`)
and read them in parallel (:mod:`ckptkit.io.reader`), or through ``torch.load(weights_only=True)``
for torch files (:mod:`ckptkit.load.torch_load`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch

from ckptkit.errors import CkptWarning, ModelMismatchError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.index import read_index
from ckptkit.format.layout import WeightSet
from ckptkit.format.naming import parse_weight_filename
from ckptkit.format.safetensors_header import SafetensorsHeader, TensorInfo
from ckptkit.format.validate import check_weight_set
from ckptkit.io.module_fill import ModuleSlots
from ckptkit.io.progress import progress_bar
from ckptkit.io.reader import TensorRead, read_tensors
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.load.keys import KeySelection, select_keys
from ckptkit.resolve.resolve import resolve_ckpt_dir

if TYPE_CHECKING:
    from torch import nn

    from ckptkit.distributed import DistributedLoadResult
    from ckptkit.placement.dispatch import PlacementResult

__all__ = ["LoadResult", "load_sharded"]

logger = logging.getLogger("ckptkit")


class LoadResult(NamedTuple):
    """What loading into a module did, like ``nn.Module.load_state_dict``'s result.

    Attributes:
        missing_keys: module keys the checkpoint did not fill (tied aliases of a filled key are
            not missing).
        unexpected_keys: selected checkpoint keys the module has no place for.
    """

    missing_keys: list[str]
    unexpected_keys: list[str]


def load_sharded(
    ckpt: str | os.PathLike[str] | CheckpointDir,
    *,
    model: nn.Module | None = None,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    variant: str | None = None,
    variant_fallback: str = "warn",
    subfolder: str | None = None,
    prefix: str | None = None,
    strip_prefixes: Sequence[str] | str | None = None,
    strict: bool = True,
    mmap: bool = False,
    num_threads: int | None = None,
    progress: bool | None = None,
    unwrap: str | bool | None = None,
    device_map: str | Mapping[str, Any] | None = None,
    max_memory: Mapping[Any, int | str] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
    no_split_module_classes: Sequence[str] | None = None,
    **resolve_kwargs: Any,
) -> dict[str, torch.Tensor] | LoadResult | PlacementResult | DistributedLoadResult:
    """Load a checkpoint (sharded or single, safetensors or torch) into a dict or into a module.

    Args:
        ckpt: anything :func:`ckptkit.resolve_ckpt_dir` accepts, or a :class:`CheckpointDir`.
        model: fill this module's parameters and persistent buffers in place. A module built on
            the meta device (``accelerate.init_empty_weights()``, ``torch.device("meta")``) is
            filled by assigning fresh tensors, so the weights are never held twice.
        device: where tensors land (``"cuda:0"`` is staged through a small pinned buffer).
            ``None``: CPU for a dict and for meta parameters; a materialized parameter stays on
            its device. For an FSDP2 model built on ``meta``: where each rank allocates its local
            shards (``None``: the device type of its mesh, e.g. the current CUDA device).
        dtype: cast floating tensors to this dtype while reading (no second pass). ``None``: the
            stored dtype (for a dict and meta parameters) or the parameter's own dtype; when a
            ``variant`` fell back to the default weights, the variant's dtype.
        variant: the variant wanted (``"fp16"``); see the variant rules in the API.
        variant_fallback: ``"warn"`` (default), ``"allow"`` or ``"error"``.
        subfolder: a component of a pipeline (``"vae"``).
        prefix: keep only keys under this prefix and strip it (``"vae."``). Only the shards
            holding such keys are opened.
        strip_prefixes: wrapper prefixes to remove (``("module.", "_orig_mod.")``).
        strict: with ``model``, raise when keys are missing or unexpected (before anything is
            loaded).
        mmap: return file-backed, zero-copy tensors (safetensors ``safe_open``, ``torch.load(mmap=True)``)
            instead of private memory. They cost no RAM up front, but every page is read on first
            touch and the file must stay in place while they live. Tensors that need a cast or
            another device are private anyway.
        num_threads: parallel readers (default: the CPUs available, 2 to 8).
        progress: show a tqdm bar; ``None`` shows it unless ``HF_HUB_DISABLE_PROGRESS_BARS`` is set.
        unwrap: torch files only: the key a state dict is nested under (``"state_dict"``,
            ``"ema"``), or ``True`` for the first usual one. Without it, a wrapped file is reported.
        device_map: with ``model`` (built on meta), place it across GPUs, CPU and ``"disk"``
            with accelerate: ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"`` or
            a dict; see :func:`ckptkit.placement.dispatch.load_with_device_map`. Disk entries of a
            safetensors checkpoint point into the original shards (nothing is copied).
        max_memory: budgets for ``device_map`` (``{0: "20GiB", "cpu": "64GiB"}``).
        offload_folder: where the offload index (and converted torch weights) go.
        no_split_module_classes: modules kept whole on one device (default: the model's
            ``_no_split_modules``).
        resolve_kwargs: more arguments for :func:`ckptkit.resolve_ckpt_dir` (``revision``,
            ``cache_dir``, ``local_files_only``, ...).

    Returns:
        ``dict[str, Tensor]`` in checkpoint order when ``model`` is ``None``, else :class:`LoadResult`
        (a :class:`~ckptkit.placement.dispatch.PlacementResult` with ``device_map``; a
        :class:`~ckptkit.distributed.DistributedLoadResult` for a model whose parameters are
        DTensors, where each rank reads only its own shards' bytes). All have ``missing_keys``
        and ``unexpected_keys``.

    Raises:
        CheckpointNotFoundError: nothing at ``ckpt``.
        VariantNotFoundError: by the variant rules.
        IncompleteCheckpointError: a shard the index names is missing (before any tensor is read).
        CorruptCheckpointError: an index or header is inconsistent or a shard truncated (before
            any tensor is read).
        UnsafeCheckpointError: a torch file needs more than ``weights_only=True`` allows.
        ModelMismatchError: ``strict`` and keys are missing or unexpected, or shapes do not match the
            model (before anything is loaded).

    Example:
        >>> state = load_sharded("./t5", dtype="bf16")  # doctest: +SKIP
        >>> with accelerate.init_empty_weights():  # doctest: +SKIP
        ...     vae = AutoencoderKL.from_config(AutoencoderKL.load_config("./sd", subfolder="vae"))
        >>> load_sharded("./sd", subfolder="vae", model=vae, variant="fp16")  # doctest: +SKIP
        LoadResult(missing_keys=[], unexpected_keys=[])
    """
    started = time.perf_counter()
    checkpoint = resolve_ckpt_dir(
        ckpt, subfolder=subfolder, variant=variant, variant_fallback=variant_fallback, **resolve_kwargs
    ).require_single()
    target_device = _device(device)
    selection = checkpoint.selection
    cast = dtype if dtype is not None else (selection.cast_dtype if selection else None)
    target_dtype = to_torch_dtype(cast) if cast is not None else None
    if device_map is not None:
        if model is None:
            raise ValueError("device_map= places a model: pass model= (built on the meta device)")
        from ckptkit.placement.dispatch import load_with_device_map

        return load_with_device_map(
            checkpoint,
            model,
            device_map=device_map,
            max_memory=max_memory,
            offload_folder=offload_folder,
            dtype=target_dtype,
            no_split_module_classes=no_split_module_classes,
            strict=strict,
            mmap=mmap,
            key_map=_key_map(prefix, strip_prefixes),
        )
    if model is not None:
        from ckptkit.distributed import has_dtensor_params

        if has_dtensor_params(model):
            from ckptkit.distributed import load_sharded_distributed

            return load_sharded_distributed(
                checkpoint,
                model,
                strict=strict,
                dtype=target_dtype,
                prefix=prefix,
                strip_prefixes=[strip_prefixes] if isinstance(strip_prefixes, str) else strip_prefixes,
                device=device,
            )
    plan = _Plan(checkpoint, prefix=prefix, strip_prefixes=strip_prefixes)
    options = _Options(model, target_device, target_dtype, strict, mmap, num_threads, progress, unwrap)
    if checkpoint.format == "safetensors":
        result = _load_safetensors(plan, options)
    else:
        from ckptkit.load.torch_load import load_torch_weights

        result = load_torch_weights(
            plan.files,
            index_keys=plan.index_keys,
            select=plan.select,
            model=model,
            device=target_device,
            dtype=target_dtype,
            strict=strict,
            mmap=mmap,
            unwrap=unwrap,
            progress=progress,
        )
    if prefix and isinstance(result, dict) and not result:
        warnings.warn(
            f"{checkpoint.path}: no key starts with prefix {prefix!r}; nothing was loaded",
            CkptWarning,
            stacklevel=2,
        )
    logger.debug("loaded %s in %.3f s", checkpoint.path, time.perf_counter() - started)
    return result


def _key_map(
    prefix: str | None, strip_prefixes: Sequence[str] | str | None
) -> Callable[[str], str | None] | None:
    """``prefix``/``strip_prefixes`` as a checkpoint key -> model key function (``None`` = skip)."""
    if not prefix and not strip_prefixes:
        return None

    def rename(key: str) -> str | None:
        selected = select_keys([key], prefix=prefix, strip_prefixes=strip_prefixes)
        return next(iter(selected), None)

    return rename


@dataclasses.dataclass
class _Options:
    model: nn.Module | None
    device: torch.device | None
    dtype: torch.dtype | None
    strict: bool
    mmap: bool
    num_threads: int | None
    progress: bool | None
    unwrap: str | bool | None


def _device(device: str | torch.device | None) -> torch.device | None:
    if device is None:
        return None
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={str(device)!r} but CUDA is not available to this torch ({torch.__version__}); "
            "pass device='cpu' or install a CUDA build of torch"
        )
    return resolved


class _Plan:
    """The validated files to read and how keys are chosen; built before any tensor is read."""

    def __init__(
        self, checkpoint: CheckpointDir, *, prefix: str | None, strip_prefixes: Sequence[str] | str | None
    ) -> None:
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.strip_prefixes = strip_prefixes
        weight_set = checkpoint.weight_set or _weight_set_of(checkpoint)
        index = weight_set.index
        self.index_keys: dict[Path, list[str]] | None = None
        partial = False
        if index is not None:
            # Only the shards that hold selected keys are checked and opened.
            wanted = self.select(index.weight_map, where=index.path).source_keys
            needed = {name for key, name in index.weight_map.items() if key in wanted}
            weight_set = dataclasses.replace(
                weight_set,
                files=[p for p in weight_set.files if p.name in needed],
                missing=[p for p in weight_set.missing if p.name in needed],
            )
            partial = len(needed) < len(index.shard_names)
            self.index_keys = {
                index.directory / name: keys for name, keys in index.keys_by_shard().items() if name in needed
            }
        check = check_weight_set(weight_set)
        check.raise_first()
        # Index-wide findings (total_size, unlisted tensors) are meaningless for a subset of shards.
        for text in [] if partial else check.warnings:
            warnings.warn(text, CkptWarning, stacklevel=4)
        self.files = list(weight_set.files)
        self.headers: dict[Path, SafetensorsHeader] = check.headers

    def select(self, keys: Any, *, where: Path | None = None) -> KeySelection:
        return select_keys(
            keys, prefix=self.prefix, strip_prefixes=self.strip_prefixes, where=where or self.checkpoint.path
        )


def _weight_set_of(checkpoint: CheckpointDir) -> WeightSet:
    files = list(checkpoint.weight_files)
    parsed = parse_weight_filename(files[0].name) if files else None
    weight_set = WeightSet(
        directory=checkpoint.path,
        name=parsed.stem if parsed else "model",
        format=checkpoint.format,
        variant=checkpoint.variant,
        files=[p for p in files if p.exists()],
        index_file=checkpoint.index_file,
        missing=[p for p in files if not p.exists()],
    )
    if checkpoint.index_file is not None:
        weight_set.index = read_index(checkpoint.index_file)
    return weight_set


def _load_safetensors(plan: _Plan, options: _Options) -> dict[str, torch.Tensor] | LoadResult:
    located: dict[str, tuple[SafetensorsHeader, TensorInfo]] = {}
    for path in plan.files:
        header = plan.headers[path]
        for name, info in header.tensors.items():
            located[name] = (header, info)
    selection = plan.select(located)
    if options.model is None:
        return _safetensors_to_dict(selection, located, options)
    return _safetensors_to_module(selection, located, options)


def _want_dtype(stored: torch.dtype, dtype: torch.dtype | None) -> torch.dtype:
    return dtype if dtype is not None and stored.is_floating_point else stored


def _safetensors_to_dict(
    selection: KeySelection, located: dict[str, tuple[SafetensorsHeader, TensorInfo]], options: _Options
) -> dict[str, torch.Tensor]:
    device = options.device or torch.device("cpu")
    out: dict[str, torch.Tensor] = {}
    if options.mmap:
        for name, tensor in _mapped(selection, located).items():
            out[name] = tensor.to(device=device, dtype=_want_dtype(tensor.dtype, options.dtype))
        return out
    reads = []
    for name, source in selection.items():
        header, info = located[source]
        stored = to_torch_dtype(info.dtype)
        out[name] = torch.empty(info.shape, dtype=_want_dtype(stored, options.dtype), device=device)
        reads.append(TensorRead(header, info, out[name]))
    _read(reads, options)
    return out


def _mapped(
    selection: KeySelection, located: dict[str, tuple[SafetensorsHeader, TensorInfo]]
) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    by_file: dict[Path, list[tuple[str, str]]] = {}
    for name, source in selection.items():
        by_file.setdefault(located[source][0].path, []).append((name, source))
    out: dict[str, torch.Tensor] = {}
    for path, names in by_file.items():
        with safe_open(path, framework="pt") as handle:
            for name, source in names:
                out[name] = handle.get_tensor(source)
    return {name: out[name] for name in selection}


def _read(reads: list[TensorRead], options: _Options) -> None:
    total = sum(r.info.nbytes for r in reads)
    with progress_bar(options.progress, total=total, desc="Loading weights") as bar:
        read_tensors(reads, num_threads=options.num_threads, progress=bar)


def _safetensors_to_module(
    selection: KeySelection, located: dict[str, tuple[SafetensorsHeader, TensorInfo]], options: _Options
) -> LoadResult:
    assert options.model is not None
    slots = ModuleSlots(options.model)
    result = plan_module_keys(slots, selection, strict=options.strict, where=_where(located))
    shapes = {name: located[selection[name]][1].shape for name in selection if name in slots}
    check_shapes(slots, shapes, where=_where(located))
    filled: set[str] = set()
    reads, assigns = [], []
    mapped = _mapped(selection, located) if options.mmap else {}
    for name, source in selection.items():
        if name not in slots or filled.intersection(slots.aliases(name)):
            continue
        filled.add(name)
        header, info = located[source]
        stored = to_torch_dtype(info.dtype)
        placement = slots.placement(name, dtype=options.dtype, device=options.device, stored=stored)
        if name in mapped:
            tensor = mapped[name]
            if (
                placement.assign
                and placement.target.dtype == stored
                and placement.target.device.type == "cpu"
            ):
                assigns.append((name, tensor))  # zero-copy: the file-backed tensor itself
            else:
                placement.target.copy_(tensor)
                if placement.assign:
                    assigns.append((name, placement.target))
            continue
        reads.append(TensorRead(header, info, placement.target))
        if placement.assign:
            assigns.append((name, placement.target))
    _read(reads, options)
    for name, tensor in assigns:
        slots.assign(name, tensor)
    return result


def _where(located: dict[str, tuple[SafetensorsHeader, TensorInfo]]) -> Path | None:
    return next(iter(located.values()))[0].path.parent if located else None


def plan_module_keys(
    slots: ModuleSlots, selection: KeySelection, *, strict: bool, where: Path | None
) -> LoadResult:
    """Missing and unexpected keys of loading ``selection`` into ``slots``; raises when ``strict``."""
    unexpected = [name for name in selection if name not in slots]
    covered = {alias for name in selection if name in slots for alias in slots.aliases(name)}
    missing = [key for key in slots if key not in covered]
    if strict and (missing or unexpected):
        raise ModelMismatchError(
            f"checkpoint and model do not match: {len(missing)} missing keys {_listing(missing)}, "
            f"{len(unexpected)} unexpected keys {_listing(unexpected)}",
            path=where,
            fix="pass prefix=/strip_prefixes= to map the names, or strict=False to load what matches",
        )
    return LoadResult(missing, unexpected)


def check_shapes(slots: ModuleSlots, shapes: Mapping[str, Sequence[int]], *, where: Path | None) -> None:
    """Raise, before anything is loaded, when a checkpoint tensor's shape differs from the module's."""
    wrong = [
        f"{name}: checkpoint {tuple(shape)} vs model {tuple(slots.current(name).shape)}"
        for name, shape in shapes.items()
        if tuple(slots.current(name).shape) != tuple(shape)
    ]
    if wrong:
        raise ModelMismatchError(
            f"{len(wrong)} tensors have other shapes than the model's: {'; '.join(wrong[:5])}",
            path=where,
            fix="build the model from the config.json saved with these weights",
        )


def _listing(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:8])
    return f"[{shown}{', ...' if len(keys) > 8 else ''}]"
