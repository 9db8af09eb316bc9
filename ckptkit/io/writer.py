"""The streaming safetensors shard writer.

A shard is written from a plan: every tensor's name, dtype code and shape are known before any
byte is written, so the header is built first and each tensor's bytes are then streamed into
place, either copied file-to-file from a byte range of another file (``os.copy_file_range``,
``os.sendfile``, or a bounded buffer) or written from an in-memory buffer (a converted tensor).
Nothing here imports torch.

The layout is the one the reference writer (safetensors ``tensor.rs``, ``prepare``) produces:
tensors sorted by descending dtype alignment (its ``Dtype`` enum order) and then by name, offsets
contiguous from 0, the JSON written compactly and padded with spaces to a multiple of 8 bytes so
every tensor starts aligned. The same tensors therefore give the same bytes as ``save_file``.
"""

from __future__ import annotations

import json
import math
import os
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.dtypes import DTYPES
from ckptkit.format.naming import index_filename, weights_filename
from ckptkit.format.safe_files import open_regular
from ckptkit.io.byte_copy import COPY_CHUNK, ProgressFn, copy_range, preallocate, write_all

__all__ = [
    "COPY_CHUNK",
    "DTYPE_ORDER",
    "PlannedShard",
    "PlannedTensor",
    "ShardWriter",
    "build_header",
    "copy_range",
    "index_bytes",
    "plan_shards",
    "preallocate",
    "write_all",
    "write_order",
]

#: The reference writer's ``Dtype`` enum, in increasing alignment order; written descending.
DTYPE_ORDER = (
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
    "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64",
    "F64", "I64", "U64",
)  # fmt: skip
_RANK = {code: rank for rank, code in enumerate(DTYPE_ORDER)}


@dataclass
class PlannedTensor:
    """One tensor to write.

    Attributes:
        name: the key.
        dtype: the safetensors code it is written as.
        shape: its shape.
        nbytes: bytes it takes in the output.
        source_path: file to copy the bytes from (with ``source_offset``), for a byte-range copy.
        source_offset: absolute offset of the first byte in ``source_path``.
        produce: for tensors that are not copied verbatim, a function returning a buffer
            (``bytes``/``memoryview``) holding exactly ``nbytes`` bytes; called when written.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    source_path: Path | None = None
    source_offset: int = 0
    produce: Callable[[], memoryview | bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"tensor {self.name!r}: safetensors has no dtype {self.dtype!r}")
        expected = DTYPES[self.dtype].nbytes(math.prod(self.shape))
        if expected != self.nbytes:
            raise ValueError(
                f"tensor {self.name!r} of shape {list(self.shape)} and dtype {self.dtype} takes "
                f"{expected} bytes, not {self.nbytes}"
            )


@dataclass
class PlannedShard:
    """One output file: its name and its tensors (in any order; the writer orders them)."""

    filename: str
    tensors: list[PlannedTensor]

    @property
    def nbytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


def plan_shards(
    tensors: Iterable[PlannedTensor],
    *,
    max_shard_size: int | None,
    weights_name: str,
    variant: str | None = None,
) -> list[PlannedShard]:
    """Split tensors into shards, greedily in the order given, as huggingface_hub does.

    A tensor that alone exceeds ``max_shard_size`` gets a shard of its own; ``None`` means one
    file. Names are the current scheme: ``model.safetensors`` for one shard,
    ``model.fp16-00001-of-00003.safetensors`` for several.

    Example:
        >>> t = [PlannedTensor(n, "U8", (4,), 4) for n in "abc"]
        >>> [s.filename for s in plan_shards(t, max_shard_size=8, weights_name="model")]
        ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']
    """
    groups: list[list[PlannedTensor]] = []
    current: list[PlannedTensor] = []
    current_size = 0
    for tensor in tensors:
        if max_shard_size is None:
            current.append(tensor)
            continue
        if tensor.nbytes > max_shard_size:
            groups.append([tensor])
            continue
        if current and current_size + tensor.nbytes > max_shard_size:
            groups.append(current)
            current, current_size = [], 0
        current.append(tensor)
        current_size += tensor.nbytes
    if current or not groups:
        groups.append(current)
    count = len(groups)
    return [
        PlannedShard(
            weights_filename(weights_name, variant=variant, shard=(i + 1, count) if count > 1 else None),
            group,
        )
        for i, group in enumerate(groups)
    ]


def _order(tensors: Sequence[PlannedTensor]) -> list[PlannedTensor]:
    return sorted(tensors, key=lambda t: (-_RANK.get(t.dtype, -1), t.name))


def write_order(shards: Sequence[PlannedShard]) -> list[PlannedTensor]:
    """The order :class:`ShardWriter` writes (and produces) the tensors of ``shards`` in.

    Example:
        >>> shard = PlannedShard("m.safetensors", [PlannedTensor("b", "U8", (1,), 1), PlannedTensor("a", "F32", (1,), 4)])
        >>> [t.name for t in write_order([shard])]
        ['a', 'b']
    """
    return [tensor for shard in shards for tensor in _order(shard.tensors)]


def build_header(
    tensors: Sequence[PlannedTensor], metadata: dict[str, str] | None
) -> tuple[bytes, list[PlannedTensor]]:
    """The header bytes (u64 length + padded JSON) and the tensors in the order they follow it.

    Example:
        >>> head, order = build_header([PlannedTensor("w", "F32", (2,), 8)], {"format": "pt"})
        >>> head[8:].rstrip(b" ")
        b'{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    """
    ordered = _order(tensors)
    entries: dict[str, object] = {}
    if metadata is not None:
        entries["__metadata__"] = dict(metadata)
    offset = 0
    for tensor in ordered:
        if tensor.name in entries:
            raise ValueError(f"tensor name {tensor.name!r} occurs twice (or is reserved)")
        entries[tensor.name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    try:
        text = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: safetensors could not read it back
        bad = exc.object[max(0, exc.start - 20) : exc.end + 20] if isinstance(exc.object, str) else ""
        raise CorruptCheckpointError(
            f"a tensor name or metadata value holds a lone UTF-16 surrogate "
            f"({bad.encode('utf-8', 'backslashreplace')!r}); safetensors cannot store it",
            fix="rename the tensor",
        ) from None
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, ordered


class ShardWriter:
    """Write planned shards into one directory, streaming each tensor's bytes.

    Source files are opened read-only, once, and kept open until :meth:`close`.

    Args:
        directory: where the shards go (a staging directory: files are written in place).
        metadata: the ``__metadata__`` of every shard (``{"format": "pt"}``).
        fsync: flush each finished file to disk.
        progress: called with the number of tensor bytes written, as they are written.

    Example:
        >>> with ShardWriter(tmp) as writer:  # doctest: +SKIP
        ...     writer.write(plan_shards(tensors, max_shard_size=None, weights_name="model")[0])
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        metadata: dict[str, str] | None = None,
        fsync: bool = True,
        progress: ProgressFn | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.metadata = {"format": "pt"} if metadata is None else metadata
        self.fsync = fsync
        self.progress = progress
        self._sources: dict[Path, int] = {}

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._sources.values():
            os.close(fd)
        self._sources.clear()

    def _source_fd(self, path: Path) -> int:
        fd = self._sources.get(path)
        if fd is None:
            fd = self._sources[path] = open_regular(path)
        return fd

    def write(self, shard: PlannedShard) -> Path:
        """Write one shard; returns its path. The file is complete (and synced) on return."""
        header, ordered = build_header(shard.tensors, self.metadata)
        target = self.directory / shard.filename
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            preallocate(fd, len(header) + shard.nbytes, path=target)
            write_all(fd, header)
            for run in _runs(ordered):
                self._write_run(fd, run)
            expected = len(header) + shard.nbytes
            if os.fstat(fd).st_size != expected:
                raise CorruptCheckpointError(
                    f"wrote {os.fstat(fd).st_size} bytes but the header promises {expected}",
                    path=target,
                    fix="a source file changed while it was being read; run the resave again",
                )
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
        return target

    def _write_run(self, fd: int, run: list[PlannedTensor]) -> None:
        first = run[0]
        if first.source_path is not None:
            length = sum(t.nbytes for t in run)
            if length:
                src = self._source_fd(first.source_path)
                copy_range(
                    src, first.source_offset, length, fd, path=first.source_path, progress=self.progress
                )
            return
        if first.nbytes == 0:
            return
        if first.produce is None:
            raise ValueError(f"tensor {first.name!r} has neither a source range nor a producer")
        data = memoryview(first.produce()).cast("B")
        if len(data) != first.nbytes:
            raise ValueError(
                f"tensor {first.name!r}: producer gave {len(data)} bytes, expected {first.nbytes}"
            )
        write_all(fd, data)
        if self.progress is not None:
            self.progress(first.nbytes)


def _runs(ordered: Sequence[PlannedTensor]) -> list[list[PlannedTensor]]:
    """Group tensors that lie back to back in one source file, so each group is one copy.

    Shards written by the reference writer keep this order, so a re-shard copies few long ranges.
    """
    runs: list[list[PlannedTensor]] = []
    for tensor in ordered:
        last = runs[-1][-1] if runs else None
        if (
            last is not None
            and tensor.source_path is not None
            and last.source_path == tensor.source_path
            and last.source_offset + last.nbytes == tensor.source_offset
        ):
            runs[-1].append(tensor)
        else:
            runs.append([tensor])
    return runs


def index_bytes(shards: Sequence[PlannedShard]) -> bytes:
    """The index JSON as transformers and diffusers write it (``indent=2``, sorted keys, newline).

    Example:
        >>> t = [PlannedTensor(n, "U8", (4,), 4) for n in "ab"]
        >>> s = plan_shards(t, max_shard_size=4, weights_name="m")
        >>> print(index_bytes(s).decode())  # doctest: +ELLIPSIS
        {
          "metadata": {
            "total_size": 8
          },
        ...
    """
    weight_map = {t.name: shard.filename for shard in shards for t in shard.tensors}
    index = {"metadata": {"total_size": sum(s.nbytes for s in shards)}, "weight_map": weight_map}
    return (json.dumps(index, indent=2, sort_keys=True) + "\n").encode("utf-8")


def index_name_for(weights_name: str, variant: str | None) -> str:
    """The index file name of a sharded set (current scheme)."""
    return index_filename(weights_name, variant=variant)
