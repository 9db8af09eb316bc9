"""Loading torch pickle checkpoints (``.bin/.pt/.pth/.ckpt``, single or sharded by an index).

Always ``torch.load(weights_only=True)`` (:func:`ckptkit.io.torch_files.load_torch_file`). Every
needed file is checked to be a complete zip archive before the first one is unpickled, and with
an index the key selection and ``strict`` are decided before anything is loaded; then shards are
loaded one at a time so a module never holds more than itself plus one shard.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import torch

from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.keys import KeySelection
from ckptkit.format.safe_files import open_regular_file
from ckptkit.io.module_fill import FillPlan, LoadResult, StoredTensor
from ckptkit.io.progress import progress_bar
from ckptkit.io.torch_files import load_torch_file, unwrap_state_dict

__all__ = ["check_torch_file", "load_torch_weights"]


def check_torch_file(path: str | os.PathLike[str]) -> None:
    """Cheap completeness check of a torch file: a zip-format file must have its central directory
    and every member inside the file (a truncated download fails here, before anything is loaded).
    Legacy (non-zip) pickles are checked when loaded.

    Raises:
        CorruptCheckpointError: the archive is truncated or damaged.
    """
    path = Path(path)
    with open_regular_file(path) as handle:
        magic = handle.read(4)
        if magic != b"PK\x03\x04":
            return
        size = os.fstat(handle.fileno()).st_size
        handle.seek(0)
        _check_zip_members(path, handle, size)


def _check_zip_members(path: Path, handle: BinaryIO, size: int) -> None:
    try:
        with zipfile.ZipFile(handle) as archive:
            for member in archive.infolist():
                if member.header_offset + member.compress_size > size:
                    raise zipfile.BadZipFile(f"member {member.filename} runs past the end")
    except zipfile.BadZipFile as exc:
        raise CorruptCheckpointError(
            f"torch file is truncated or damaged ({exc})",
            path=path,
            fix="the file is truncated; download or copy it again",
        ) from None


def load_torch_weights(
    files: list[Path],
    *,
    index_keys: dict[Path, list[str]] | None,
    select: Callable[..., KeySelection],
    plan: Callable[[list[StoredTensor]], FillPlan] | None,
    device: torch.device | None,
    dtype: torch.dtype | None,
    mmap: bool,
    unwrap: str | bool | None,
    progress: bool | None,
) -> dict[str, torch.Tensor] | LoadResult:
    """Load torch files into a dict, or into a module by the plan ``plan`` makes (see
    :func:`ckptkit.load_sharded`)."""
    for path in files:
        check_torch_file(path)
    fill: FillPlan | None = None
    if plan is not None and index_keys is not None:
        # The index names every key: keys are planned (and strictness decided) before any load.
        fill = plan([StoredTensor(k) for path in files for k in index_keys.get(path, [])])
    out: dict[str, torch.Tensor] = {}
    states: list[tuple[Path, dict[str, torch.Tensor]]] = []
    with progress_bar(progress, total=len(files), desc="Loading weights", unit="file") as bar:
        for path in files:
            state = unwrap_state_dict(load_torch_file(path, mmap=mmap), unwrap, path)
            _check_index(path, state, index_keys)
            if fill is not None:
                _fill(fill, state, device)
            elif plan is None:
                for name, source in select(state, where=path).items():
                    tensor = state[source]
                    want = dtype if dtype is not None and tensor.dtype.is_floating_point else tensor.dtype
                    out[name] = tensor.to(device=device or torch.device("cpu"), dtype=want)
            else:
                states.append((path, state))
            if bar is not None:
                bar.update(1)
    if plan is None:
        return out
    if fill is None:
        # No index: the keys are known only now; plan before touching the module.
        stored = {
            key: StoredTensor(key, tuple(tensor.shape), tensor.dtype)
            for _, state in states
            for key, tensor in state.items()
        }
        fill = plan(list(stored.values()))
        for _, state in states:
            _fill(fill, state, device)
    return fill.result


def _check_index(
    path: Path, state: dict[str, torch.Tensor], index_keys: dict[Path, list[str]] | None
) -> None:
    if index_keys is None:
        return
    absent = [k for k in index_keys.get(path, []) if k not in state]
    if absent:
        raise CorruptCheckpointError(
            f"index says {len(absent)} tensors are in this shard but it does not hold them "
            f"(first: {absent[0]!r})",
            path=path,
            fix="the index and shards come from different saves; download or re-save them together",
        )


def _fill(plan: FillPlan, state: dict[str, torch.Tensor], device: torch.device | None) -> None:
    """Fill the planned keys that ``state`` (one loaded file) holds."""
    present = {name: state[stored.key] for name, stored in plan.fills.items() if stored.key in state}
    plan.check_shapes({name: tensor.shape for name, tensor in present.items()})
    with torch.no_grad():
        for name, tensor in present.items():
            placement = plan.slots.placement(
                name, dtype=plan.cast(name, tensor.dtype), device=device, stored=tensor.dtype
            )
            target = placement.target
            if placement.assign and target.dtype == tensor.dtype and target.device == tensor.device:
                plan.slots.assign(name, tensor.contiguous())  # the loaded tensor itself: no copy
                continue
            target.copy_(tensor)
            if placement.assign:
                plan.slots.assign(name, target)
