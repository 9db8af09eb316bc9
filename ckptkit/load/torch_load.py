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
from typing import TYPE_CHECKING, BinaryIO

import torch

from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.safe_files import open_regular_file
from ckptkit.io.module_fill import ModuleSlots
from ckptkit.io.progress import progress_bar
from ckptkit.io.torch_files import load_torch_file, unwrap_state_dict
from ckptkit.load.keys import KeySelection

if TYPE_CHECKING:
    from torch import nn

    from ckptkit.load.sharded import LoadResult

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
    model: nn.Module | None,
    device: torch.device | None,
    dtype: torch.dtype | None,
    strict: bool,
    mmap: bool,
    unwrap: str | bool | None,
    progress: bool | None,
) -> dict[str, torch.Tensor] | LoadResult:
    """Load torch files into a dict or a module; see :func:`ckptkit.load_sharded`."""
    from ckptkit.load.sharded import plan_module_keys

    for path in files:
        check_torch_file(path)
    where = files[0].parent if files else None
    slots = ModuleSlots(model) if model is not None else None
    result: LoadResult | None = None
    if slots is not None and index_keys is not None:
        keys = [k for path in files for k in index_keys.get(path, [])]
        result = plan_module_keys(slots, select(keys), strict=strict, where=where)
    out: dict[str, torch.Tensor] = {}
    seen: set[str] = set()
    states: list[tuple[Path, KeySelection, dict[str, torch.Tensor]]] = []
    with progress_bar(progress, total=len(files), desc="Loading weights", unit="file") as bar:
        for path in files:
            state = unwrap_state_dict(load_torch_file(path, mmap=mmap), unwrap, path)
            _check_index(path, state, index_keys)
            selection = select(state, where=path)
            states.append((path, selection, state))
            if slots is not None and index_keys is not None:
                _fill(slots, selection, state, path, device, dtype, seen)
                states.clear()
            elif slots is None:
                for name, source in selection.items():
                    tensor = state[source]
                    want = dtype if dtype is not None and tensor.dtype.is_floating_point else tensor.dtype
                    out[name] = tensor.to(device=device or torch.device("cpu"), dtype=want)
                states.clear()
            if bar is not None:
                bar.update(1)
    if slots is None:
        return out
    if result is None:
        # No index: the keys are known only now; decide strictness before touching the module.
        merged = KeySelection()
        for _, selection, _ in states:
            merged.update(selection)
        result = plan_module_keys(slots, merged, strict=strict, where=where)
        for path, selection, state in states:
            _fill(slots, selection, state, path, device, dtype, seen)
    return result


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


def _fill(
    slots: ModuleSlots,
    selection: KeySelection,
    state: dict[str, torch.Tensor],
    path: Path,
    device: torch.device | None,
    dtype: torch.dtype | None,
    seen: set[str],
) -> None:
    from ckptkit.load.sharded import check_shapes

    present = {name: source for name, source in selection.items() if name in slots}
    check_shapes(slots, {name: state[source].shape for name, source in present.items()}, where=path)
    with torch.no_grad():
        for name, source in present.items():
            if seen.intersection(slots.aliases(name)):
                continue
            seen.add(name)
            tensor = state[source]
            placement = slots.placement(name, dtype=dtype, device=device, stored=tensor.dtype)
            target = placement.target
            if placement.assign and target.dtype == tensor.dtype and target.device == tensor.device:
                slots.assign(name, tensor.contiguous())  # the loaded tensor itself: no copy
                continue
            target.copy_(tensor)
            if placement.assign:
                slots.assign(name, target)
