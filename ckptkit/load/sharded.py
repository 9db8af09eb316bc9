"""``load_sharded``: any checkpoint into a dict of tensors or straight into a module.

The steps, each owned by a lower floor: resolve the directory and pick the weight set by the
variant rules (:func:`ckptkit.resolve.resolve.resolve_ckpt_dir`), validate the index and every needed
header before reading a byte of tensor data (:func:`ckptkit.format.validate.check_weight_set`),
choose keys (:mod:`ckptkit.format.keys`), plan where each tensor lands and at which dtype
(:func:`ckptkit.io.module_fill.plan_module_fill`, the one plan every path into a module executes)
and read them in parallel (:mod:`ckptkit.io.reader`), or through ``torch.load(weights_only=True)``
for torch files (:mod:`ckptkit.load.torch_load`). ``device_map=`` and models with DTensor
parameters are handed to :mod:`ckptkit.placement.dispatch` and :mod:`ckptkit.distributed.load`,
which execute the same plan.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ckptkit.distributed.load import DistributedLoadResult, has_dtensor_params, load_sharded_distributed
from ckptkit.errors import CkptWarning, CorruptCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.confine import confine_enabled
from ckptkit.format.keys import KeySelection
from ckptkit.format.safe_files import confinement
from ckptkit.format.safetensors_header import SafetensorsHeader, TensorInfo
from ckptkit.io.gc_pause import gc_paused
from ckptkit.io.module_fill import FillPlan, LoadResult, StoredTensor, plan_module_fill
from ckptkit.io.progress import progress_bar
from ckptkit.io.reader import FileMaps, TensorRead, read_tensors
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.load.torch_load import load_torch_weights
from ckptkit.load.weight_files import WeightFiles
from ckptkit.placement.dispatch import PlacementResult, load_with_device_map
from ckptkit.resolve.resolve import resolve_ckpt_dir

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LoadResult", "load_sharded"]

logger = logging.getLogger("ckptkit")


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
    mmap: bool | None = None,
    num_threads: int | None = None,
    progress: bool | None = None,
    unwrap: str | bool | None = None,
    device_map: str | Mapping[str, Any] | None = None,
    max_memory: Mapping[Any, int | str] | None = None,
    offload_folder: str | os.PathLike[str] | None = None,
    no_split_module_classes: Sequence[str] | None = None,
    keep_in_fp32_modules: Sequence[str] | None = None,
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
        mmap: ``None`` (default) or ``True``: CPU tensors in their stored dtype are zero-copy,
            copy-on-write views of the files (as ``from_pretrained`` and safetensors ``load_file``
            return them): no anonymous memory, each page read on first touch, writes stay private,
            and the files must not be truncated in place while the tensors live. ``False``: every
            tensor is private memory (read in parallel). A cast, another device or a misaligned
            tensor is private either way.
        num_threads: parallel readers (default: the CPUs available, 8 to 16, since cold reads wait
            on the disk; 2 to 8 when the readers also cast or copy to another device). When every
            tensor is read as stored, pages already in the page cache are copied by one thread per
            CPU whatever this says (their copy is CPU work); these threads read the rest, as that
            many sequential streams (each a contiguous run of the files, in order). A default CPU
            cast runs on the caller's thread over torch's intra-op threads (if more than one).
        progress: show a tqdm bar; ``None``: when stderr is a terminal and
            ``HF_HUB_DISABLE_PROGRESS_BARS`` is not set (the default of every ckptkit verb).
        unwrap: torch files only: the key a state dict is nested under (``"state_dict"``,
            ``"ema"``), or ``True`` for the first usual one. Without it, a wrapped file is reported.
        device_map: with ``model`` (built on meta), place it across GPUs, CPU and ``"disk"``
            with accelerate (``load_sharded`` is the one front door: it runs
            :func:`~ckptkit.load_with_device_map`, which stays public for ``offload_buffers``): ``"auto"``, ``"balanced"``, ``"balanced_low_0"``, ``"sequential"`` or
            a dict; see :func:`ckptkit.placement.dispatch.load_with_device_map`. Disk entries of a
            safetensors checkpoint point into the original shards (nothing is copied).
        max_memory: budgets for ``device_map`` (``{0: "20GiB", "cpu": "64GiB"}``).
        offload_folder: where the offload index (and converted torch weights) go.
        no_split_module_classes: modules kept whole on one device (default: the model's
            ``_no_split_modules``).
        keep_in_fp32_modules: with ``model`` and ``dtype``, modules whose floating tensors stay
            float32 (matched by whole dotted name parts: ``"norm"`` is ``blocks.0.norm.weight``);
            ``None``: the model's ``_keep_in_fp32_modules``; ``[]``: none.
        resolve_kwargs: more arguments for :func:`ckptkit.resolve_ckpt_dir` (``revision``,
            ``cache_dir``, ``local_files_only``, ...).

    Every path into a module (plain, meta, ``device_map``, DTensor parameters) executes the same
    plan (:func:`ckptkit.io.module_fill.plan_module_fill`): the same keys, shapes, dtypes and
    errors. Options the path taken cannot honour raise ``TypeError`` naming them: with
    ``device_map``, ``device``/``num_threads``/``progress``/``unwrap``; with DTensor parameters,
    ``num_threads``/``progress``/``unwrap``, ``mmap=True`` and the placement options (``device``
    only says where a model built on meta is allocated; local shards are always the model's own
    memory, filled in place, so they cannot be views of the files and ``mmap=False`` changes
    nothing); without ``device_map``, ``max_memory``/
    ``offload_folder``/``no_split_module_classes``.

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
            model (before anything is loaded), on every path.
        AmbiguousCheckpointError: two checkpoint keys get one name after ``strip_prefixes``.
        TypeError: an option the path taken cannot honour (see above).

    Example:
        >>> state = load_sharded("./t5", dtype="bf16")  # doctest: +SKIP
        >>> with accelerate.init_empty_weights():  # doctest: +SKIP
        ...     vae = AutoencoderKL.from_config(AutoencoderKL.load_config("./sd", subfolder="vae"))
        >>> load_sharded("./sd", subfolder="vae", model=vae, variant="fp16")  # doctest: +SKIP
        <LoadResult './sd/vae': 248 tensors, 159.6 MiB, float16 159.6 MiB, 0.41 s>
    """
    started = time.perf_counter()
    _refuse_unused_options(
        model,
        device_map=device_map,
        device=device,
        num_threads=num_threads,
        progress=progress,
        unwrap=unwrap,
        max_memory=max_memory,
        offload_folder=offload_folder,
        no_split_module_classes=no_split_module_classes,
        keep_in_fp32_modules=keep_in_fp32_modules,
        mmap=True if mmap else None,  # mmap=False (private copies) every path honours
    )
    checkpoint = resolve_ckpt_dir(
        ckpt, subfolder=subfolder, variant=variant, variant_fallback=variant_fallback, **resolve_kwargs
    ).require_single()
    # Under confinement every file is checked as opened (its descriptor's real path), so a file
    # swapped for an outside link after resolve checked it is still refused.
    confined_root = (
        (checkpoint.root or checkpoint.path) if confine_enabled(resolve_kwargs.get("confine")) else None
    )
    with confinement(confined_root), gc_paused():
        result = _load(
            checkpoint,
            model=model,
            device=device,
            dtype=dtype,
            prefix=prefix,
            strip_prefixes=strip_prefixes,
            strict=strict,
            mmap=mmap,
            num_threads=num_threads,
            progress=progress,
            unwrap=unwrap,
            device_map=device_map,
            max_memory=max_memory,
            offload_folder=offload_folder,
            no_split_module_classes=no_split_module_classes,
            keep_in_fp32_modules=keep_in_fp32_modules,
        )
    logger.debug("loaded %s in %.3f s", checkpoint.path, time.perf_counter() - started)
    if isinstance(result, LoadResult) and model is not None:
        result.record(checkpoint.path, model, time.perf_counter() - started)
    return result


def _load(
    checkpoint: CheckpointDir,
    *,
    model: nn.Module | None,
    device: str | torch.device | None,
    dtype: str | torch.dtype | None,
    prefix: str | None,
    strip_prefixes: Sequence[str] | str | None,
    strict: bool,
    mmap: bool | None,
    num_threads: int | None,
    progress: bool | None,
    unwrap: str | bool | None,
    device_map: str | Mapping[str, Any] | None,
    max_memory: Mapping[Any, int | str] | None,
    offload_folder: str | os.PathLike[str] | None,
    no_split_module_classes: Sequence[str] | None,
    keep_in_fp32_modules: Sequence[str] | None,
) -> dict[str, torch.Tensor] | LoadResult | PlacementResult | DistributedLoadResult:
    target_device = _device(device)
    selection = checkpoint.selection
    cast = dtype if dtype is not None else (selection.cast_dtype if selection else None)
    target_dtype = to_torch_dtype(cast) if cast is not None else None
    if model is not None and device_map is not None:
        return load_with_device_map(
            checkpoint,
            model,
            device_map=device_map,
            max_memory=max_memory,
            offload_folder=offload_folder,
            dtype=target_dtype,
            no_split_module_classes=no_split_module_classes,
            strict=strict,
            mmap=mmap is not False,
            prefix=prefix,
            strip_prefixes=strip_prefixes,
            keep_in_fp32_modules=keep_in_fp32_modules,
        )
    if model is not None and has_dtensor_params(model):
        return load_sharded_distributed(
            checkpoint,
            model,
            strict=strict,
            dtype=target_dtype,
            prefix=prefix,
            strip_prefixes=strip_prefixes,
            keep_in_fp32_modules=keep_in_fp32_modules,
            device=device,
        )
    files = WeightFiles(checkpoint, prefix=prefix, strip_prefixes=strip_prefixes)
    options = _Options(
        model, target_device, target_dtype, strict, mmap is not False, num_threads, progress, unwrap
    )
    plan = None
    if model is not None:

        def plan(stored: list[StoredTensor], where: Path | None = None) -> FillPlan:
            return plan_module_fill(
                model,
                stored,
                prefix=prefix,
                strip_prefixes=strip_prefixes,
                dtype=target_dtype,
                keep_in_fp32=keep_in_fp32_modules,
                strict=strict,
                where=where or checkpoint.path,
            )

    if checkpoint.format == "safetensors":
        result = _load_safetensors(files, options, plan)
    else:
        result = load_torch_weights(
            files.files,
            index_keys=files.index_keys,
            select=files.select,
            plan=plan,
            device=target_device,
            dtype=target_dtype,
            mmap=mmap is not False,
            unwrap=unwrap,
            progress=progress,
        )
    if prefix and isinstance(result, dict) and not result:
        warnings.warn(
            f"{checkpoint.path}: no key starts with prefix {prefix!r}; nothing was loaded",
            CkptWarning,
            stacklevel=3,
        )
    return result


def _refuse_unused_options(model: nn.Module | None, *, device_map: object, **options: Any) -> None:
    """Raise for options the branch taken cannot honour: no option is silently ignored."""
    given = {name for name, value in options.items() if value is not None}
    placement_only = {"max_memory", "offload_folder", "no_split_module_classes"}
    if device_map is not None:
        if model is None:
            raise ValueError("device_map= places a model: pass model= (built on the meta device)")
        # accelerate decides devices, reads in one pass and shows no bar; torch files are read whole.
        refused = given & {"device", "num_threads", "progress", "unwrap"}
        why = "with device_map= (accelerate places the tensors)"
    elif model is not None and has_dtensor_params(model):
        # Local shards are filled in place on their own devices (device= only says where a model
        # built on meta is allocated), by one reader per rank.
        # mmap=True asks for views of the files, which local shards can never be.
        refused = given & ({"num_threads", "progress", "unwrap", "mmap"} | placement_only)
        why = "for a model with DTensor parameters (each rank fills its local shards in place)"
    else:
        refused = given & placement_only
        why = "without device_map="
        if model is None and "keep_in_fp32_modules" in given:
            refused.add("keep_in_fp32_modules")
            why = "without model="
    if refused:
        names = ("mmap=True" if name == "mmap" else name for name in sorted(refused))
        raise TypeError(f"load_sharded: {', '.join(names)} cannot be used {why}")


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


def _load_safetensors(
    files: WeightFiles, options: _Options, plan: Callable[..., FillPlan] | None
) -> dict[str, torch.Tensor] | LoadResult:
    located: dict[str, tuple[SafetensorsHeader, TensorInfo]] = {}
    for path in files.files:
        header = files.headers[path]
        for name, info in header.tensors.items():
            # Valid safetensors, but no torch size. Only an empty tensor can have such a dimension:
            # the header check refused any element count of 2**64 or more, so a dimension of 2**63
            # or more leaves a count below 2**64 only when another dimension is 0.
            if info.begin == info.end and max(info.shape, default=0) >= 2**63:
                raise CorruptCheckpointError(
                    f"tensor {name!r} has a dimension of 2**63 or more, which torch cannot represent",
                    path=path,
                )
            located[name] = (header, info)
    if plan is None:
        return _safetensors_to_dict(files.select(located), located, options)
    stored = [StoredTensor(key, info.shape, to_torch_dtype(info.dtype)) for key, (_, info) in located.items()]
    return _safetensors_to_module(plan(stored, _where(located)), located, options)


def _safetensors_to_dict(
    selection: KeySelection, located: dict[str, tuple[SafetensorsHeader, TensorInfo]], options: _Options
) -> dict[str, torch.Tensor]:
    device = options.device or torch.device("cpu")
    maps = _file_maps(options, device)
    out: dict[str, torch.Tensor] = {}
    reads = []
    cast = options.dtype
    for name, source in selection.items():
        header, info = located[source]
        stored = to_torch_dtype(info.dtype)
        want = cast if cast is not None and stored.is_floating_point else stored  # casts: floats only
        if maps is not None and want is stored:
            view = maps.tensor(header, info, stored)
            if view is not None:
                out[name] = view  # zero-copy: a copy-on-write view of the file
                continue
        out[name] = torch.empty(info.shape, dtype=want, device=device)
        reads.append(TensorRead(header, info, out[name]))
    _read(reads, options, maps)
    return out


def _file_maps(options: _Options, device: torch.device | None) -> FileMaps | None:
    """Maps for zero-copy CPU tensors, unless a private copy was asked (``mmap=False``)."""
    return FileMaps() if options.mmap and (device is None or device.type == "cpu") else None


def _read(reads: list[TensorRead], options: _Options, maps: FileMaps | None) -> None:
    """Read in parallel; with ``maps`` (not ``mmap=False``), CPU casts read from the files' maps."""
    if not reads:  # every tensor a view of its file: no reader to set up, no bar (it counts bytes read)
        return
    total = sum(r.info.nbytes for r in reads)
    with progress_bar(options.progress, total=total, desc="Loading weights") as bar:
        read_tensors(reads, num_threads=options.num_threads, progress=bar, maps=maps)


def _safetensors_to_module(
    plan: FillPlan, located: dict[str, tuple[SafetensorsHeader, TensorInfo]], options: _Options
) -> LoadResult:
    reads, assigns = [], []
    maps = _file_maps(options, options.device)
    chosen = KeySelection({name: stored.key for name, stored in plan.fills.items()})
    for name, source in chosen.items():
        header, info = located[source]
        stored = to_torch_dtype(info.dtype)
        if (
            maps is not None
            and plan.slots.current(name).is_meta
            and plan.cast(name, stored) in (None, stored)
        ):
            # A meta tensor in its stored dtype: a view of the file, without allocating a target first.
            view = maps.tensor(header, info, stored)
            if view is not None:
                assigns.append((name, view))
                continue
        placement = plan.slots.placement(
            name, dtype=plan.cast(name, stored), device=options.device, stored=stored
        )
        target = placement.target
        if maps is not None and placement.assign and target.dtype == stored and target.device.type == "cpu":
            view = maps.tensor(header, info, stored)
            if view is not None:
                assigns.append((name, view))  # zero-copy: a copy-on-write view of the file
                continue
        reads.append(TensorRead(header, info, placement.target))
        if placement.assign:
            assigns.append((name, placement.target))
    _read(reads, options, maps)
    for name, tensor in assigns:
        plan.slots.assign(name, tensor)
    return plan.result


def _where(located: dict[str, tuple[SafetensorsHeader, TensorInfo]]) -> Path | None:
    return next(iter(located.values()))[0].path.parent if located else None
