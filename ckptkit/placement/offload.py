"""accelerate's disk-offload folder: the ``index.json`` and, for torch sources, ``.dat`` files.

accelerate's ``OffloadedWeightsLoader`` reads two kinds of index entries: ``{"safetensors_file",
"weight_name", "dtype"}`` (a tensor inside an existing safetensors file: nothing to copy) and
``{"dtype", "shape"}`` (a raw ``<name>.dat`` file in the folder, which ``offload_weight`` writes).
Entries ckptkit writes for a torch source also carry ``"ckptkit_source"`` (path, size and mtime of
the source files), so a later load with the same source reuses them instead of converting again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ckptkit.io.atomic import staged_file

__all__ = ["convert_once", "read_offload_index", "source_fingerprint", "write_offload_index"]


def source_fingerprint(paths: Sequence[str | os.PathLike[str]]) -> str:
    """Real path, size and mtime of each file: what tells a stale conversion from a fresh one."""
    parts = []
    for path in paths:
        stat = os.stat(path)
        parts.append(f"{os.path.realpath(path)}:{stat.st_size}:{stat.st_mtime_ns}")
    return "|".join(parts)


def read_offload_index(folder: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The folder's ``index.json``, or ``{}`` when it is absent or unreadable (it is then rewritten)."""
    path = Path(folder) / "index.json"
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def write_offload_index(folder: str | os.PathLike[str], index: Mapping[str, Any]) -> None:
    """Write ``index.json`` through :func:`ckptkit.io.atomic.staged_file`: a reader never sees half of it.

    Example:
        >>> write_offload_index("/tmp/offload", {"lm_head.weight": {"safetensors_file": "/m/model.safetensors",
        ...     "weight_name": "lm_head.weight", "dtype": "bfloat16"}})  # doctest: +SKIP
    """
    with staged_file(Path(folder) / "index.json", overwrite=True) as staging:
        staging.path.write_text(json.dumps(index, indent=2), encoding="utf-8")


def convert_once(
    state: Mapping[str, torch.Tensor],
    names: Sequence[str],
    dtypes: Mapping[str, torch.dtype],
    folder: str | os.PathLike[str],
    source: str,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Write ``names`` of ``state`` as accelerate ``.dat`` files in ``folder``, unless already there.

    Args:
        state: the source tensors (a torch file's state dict, mmap-backed is fine).
        names: the tensors to offload.
        dtypes: the dtype each is held in (default: as stored).
        folder: the offload folder.
        source: :func:`source_fingerprint` of the source files.

    Returns:
        The index entries of ``names`` and the names written by this call (empty on reuse).
    """
    from accelerate.utils import offload_weight

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    existing = read_offload_index(folder)
    index = dict(existing)
    written = []
    for name in names:
        tensor = state[name]
        dtype = dtypes.get(name, tensor.dtype)
        entry = existing.get(name) or {}
        dat = folder / f"{name}.dat"
        fresh = (
            entry.get("ckptkit_source") == source
            and entry.get("dtype") == str(dtype).removeprefix("torch.")
            and entry.get("shape") == list(tensor.shape)
            and dat.is_file()
            and dat.stat().st_size == max(tensor.numel(), 1) * dtype.itemsize
        )
        if not fresh:
            one: dict[str, Any] = {}
            offload_weight(tensor.to(dtype), name, os.fspath(folder), index=one)
            index[name] = {**one[name], "ckptkit_source": source}
            written.append(name)
    if written:
        write_offload_index(folder, index)
    return {name: index[name] for name in names}, written
