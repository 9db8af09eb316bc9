"""Shard index files (``*.safetensors.index*.json``, ``pytorch_model.bin.index.json``).

An index is ``{"metadata": {"total_size": <bytes>, ...}, "weight_map": {tensor: shard file}}``.
Readers use ``sorted(set(weight_map.values()))`` as the shard list.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath, PureWindowsPath

from ckptkit.errors import CorruptCheckpointError, UnsafeCheckpointError
from ckptkit.format.safe_files import as_path, quote_content, read_capped
from ckptkit.format.strict_json import DuplicateKeyError, loads_strict

__all__ = ["ShardIndex", "check_shard_name", "read_index"]

#: An index is a few MB even for the largest models; refuse to parse anything much bigger.
MAX_INDEX_SIZE = 256 * 2**20


@dataclass
class ShardIndex:
    """A parsed index.

    Attributes:
        path: the index file.
        weight_map: tensor name -> shard file name, relative to the index's directory.
        metadata: the ``metadata`` object (``total_size`` among others).
    """

    path: Path
    weight_map: dict[str, str]
    metadata: dict[str, object] = field(default_factory=dict)

    # Computed once: a load asks for these several times, and a Path made again must be hashed
    # again (in a dict or set) where the same object keeps its hash. An index is not changed after
    # it is read.
    @cached_property
    def directory(self) -> Path:
        return self.path.parent

    @cached_property
    def _shards(self) -> dict[str, Path]:
        return {name: self.directory / name for name in sorted(set(self.weight_map.values()))}

    @property
    def shard_names(self) -> list[str]:
        """The shard file names, sorted and unique, as the libraries read them."""
        return list(self._shards)

    @property
    def shard_paths(self) -> list[Path]:
        return list(self._shards.values())

    def shard_path(self, name: str) -> Path:
        """The path of the shard ``name`` (a name from the weight map)."""
        path = self._shards.get(name)
        return path if path is not None else self.directory / name

    @property
    def total_size(self) -> int | None:
        value = self.metadata.get("total_size")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def keys_by_shard(self) -> dict[str, list[str]]:
        """Shard file name -> the tensor names the index puts in it."""
        result: dict[str, list[str]] = {}
        for key, shard in self.weight_map.items():
            result.setdefault(shard, []).append(key)
        return result

    def missing_shards(self) -> list[Path]:
        """Shards the index names that do not exist (dangling links count as missing)."""
        return [p for p in self.shard_paths if not p.exists()]


def check_shard_name(name: str, index_path: str | os.PathLike[str]) -> None:
    """Refuse a shard name that is absolute or climbs out of the index's directory.

    Raises:
        UnsafeCheckpointError: always for such names, whatever ``confine`` says.
    """
    if name not in ("", ".", "..") and not any(c in name for c in "/\\:\x00"):
        return  # a plain file name (the usual case): no separator, drive or NUL to judge
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if (
        not name
        or PurePosixPath(name).is_absolute()
        or PureWindowsPath(name).is_absolute()
        or PureWindowsPath(name).drive
        or ".." in parts
        or "\x00" in name
    ):
        raise UnsafeCheckpointError(
            f"index names shard {name!r}, a path outside the checkpoint directory",
            path=index_path,
            fix="shard names must be plain file names next to the index; do not load this checkpoint",
        )
    if name.endswith(("/", "\\")) or any(part in ("", ".") for part in name.replace("\\", "/").split("/")):
        raise CorruptCheckpointError(
            f"index names shard {quote_content(name)}, which is not a file name",
            path=index_path,
            fix="each weight_map value must name a shard file; re-save the checkpoint",
        )


def read_index(path: str | os.PathLike[str]) -> ShardIndex:
    """Read and check an index file (names only; see :func:`ckptkit.format.layout` for shards).

    Raises:
        IncompleteCheckpointError: the index file is missing.
        CorruptCheckpointError: it is not an index (bad JSON, no ``weight_map``, wrong types).
        UnsafeCheckpointError: a shard name is absolute or contains ``..``.

    Example:
        >>> index = read_index("model.safetensors.index.json")  # doctest: +SKIP
        >>> index.shard_names  # doctest: +SKIP
        ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']
    """
    path = as_path(path)
    raw = read_capped(path, MAX_INDEX_SIZE, what="index")
    try:
        parsed = loads_strict(raw)
    except DuplicateKeyError as dup:
        raise CorruptCheckpointError(
            f"index lists tensor {dup.key!r} twice", path=path, fix="re-save the checkpoint"
        ) from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(f"index is not valid JSON ({exc})", path=path) from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("weight_map"), dict):
        raise CorruptCheckpointError('index has no "weight_map" object', path=path)
    weight_map = parsed["weight_map"]
    for key, shard in weight_map.items():
        if not isinstance(shard, str):
            raise CorruptCheckpointError(f"weight_map entry {key!r} is not a file name", path=path)
    for shard in set(weight_map.values()):  # millions of keys name a handful of shards
        check_shard_name(shard, path)
    metadata = parsed.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise CorruptCheckpointError('index "metadata" is not an object', path=path)
    if not weight_map:
        raise CorruptCheckpointError(
            'index has an empty "weight_map": it lists no tensors',
            path=path,
            fix="re-save the checkpoint, or delete the index if the shards are meant to be read alone",
        )
    return ShardIndex(path=path, weight_map=dict(weight_map), metadata=metadata)
