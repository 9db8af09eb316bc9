"""What a resave reads: every tensor of a source as a :class:`PlannedTensor`.

Sources: a weight set (:class:`CheckpointDir`) or a ``torch.distributed.checkpoint`` directory
(:class:`DcpCheckpoint`). safetensors tensors whose dtype stays are planned as byte ranges of their
file, so the writer copies them file-to-file without decoding; tensors to convert are read one at a
time (:func:`ckptkit.io.tensors.read_tensor`) when the writer reaches them. torch files are opened
with ``mmap=True`` (file-backed, nothing read until written) and ``weights_only=True``. A DCP
directory is read with ``dcp.load``, a batch of at most ``batch_size`` bytes ahead of the writer,
in the order the writer asks for the tensors (:meth:`SourceTensors.written_as`).

torch is imported only when needed (a dtype change or a torch file): a plain safetensors re-shard
runs without it, which saves its import time and ~100 MiB of memory.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckptkit.errors import CheckpointNotFoundError, CkptWarning, CorruptCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.dtypes import DTYPES, canonical_dtype
from ckptkit.format.file_kinds import DCP_METADATA_NAME
from ckptkit.format.safe_files import open_regular
from ckptkit.format.safetensors_header import SafetensorsHeader, TensorInfo, read_header
from ckptkit.format.validate import check_weight_set
from ckptkit.io.writer import PlannedShard, PlannedTensor, write_order

if TYPE_CHECKING:
    import torch

__all__ = ["DcpCheckpoint", "SourceTensors", "code_of", "plan_source_tensors", "tensor_bytes"]


@dataclass(frozen=True)
class DcpCheckpoint:
    """A ``torch.distributed.checkpoint`` directory as a resave source.

    Attributes:
        path: the directory ``dcp.save`` wrote (its ``.metadata`` and ``*.distcp`` files).
        prefix: keep only the keys under this prefix and strip it (``"model."`` for a
            ``{"model": ..., "optim": ...}`` training state); ``None`` keeps every tensor.
        batch_size: the most bytes of tensors read ahead of the writer (a larger tensor alone).
    """

    path: Path
    prefix: str | None = None
    batch_size: int = 2**30

    def __fspath__(self) -> str:
        return os.fspath(self.path)


@dataclass
class SourceTensors:
    """The planned tensors of one source, in key order, for :func:`~ckptkit.io.writer.plan_shards`."""

    tensors: list[PlannedTensor]
    _reader: _DcpReader | None = field(default=None, repr=False)

    def written_as(self, shards: Sequence[PlannedShard]) -> None:
        """Say how the writer laid the tensors out, so a reading-ahead source follows its order."""
        if self._reader is not None:
            self._reader.follow([t.name for t in write_order(shards)])


_CODE_OF_NAME = {info.name: code for code, info in DTYPES.items()}
# Scale formats and packed sub-byte types are not numbers a cast should touch.
_NOT_CAST = ("F8_E8M0", "F4", "F6_E2M3", "F6_E3M2")


def code_of(dtype: Any, *, name: str = "", path: str | os.PathLike[str] | None = None) -> str:
    """The safetensors code of a torch dtype or dtype name (``torch.bfloat16``/``"bf16"`` -> ``"BF16"``).

    Raises:
        CorruptCheckpointError: safetensors cannot store that dtype.
    """
    text = str(dtype).removeprefix("torch.")
    code = _CODE_OF_NAME.get(text)
    if code is None and not hasattr(dtype, "is_floating_point"):
        code = _CODE_OF_NAME.get(canonical_dtype(text))
    if code is None:
        raise CorruptCheckpointError(
            f"tensor {name!r} has dtype {dtype}, which safetensors cannot store",
            path=path,
            fix="convert that tensor to a supported dtype before resaving",
        )
    return code


def tensor_bytes(tensor: torch.Tensor, dtype: torch.dtype | None = None) -> memoryview:
    """The raw little-endian bytes of ``tensor`` (cast to ``dtype`` when floating), C order."""
    import torch

    tensor = tensor.detach()
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    flat = tensor.contiguous().reshape(-1)
    if flat.numel() == 0:
        return memoryview(b"")
    return flat.view(torch.uint8).numpy().data


def _castable(code: str, target: str | None) -> bool:
    info = DTYPES[code]
    return target is not None and info.floating and code not in _NOT_CAST and code != target


@contextlib.contextmanager
def plan_source_tensors(
    ckpt: CheckpointDir | DcpCheckpoint,
    *,
    dtype: torch.dtype | str | None = None,
    unwrap: str | bool | None = None,
) -> Iterator[SourceTensors]:
    """Plan every tensor of ``ckpt``'s weight set (or DCP directory), in key order, for :class:`ShardWriter`.

    Key order is the files' order, then the tensors' order in each file (their offsets for
    safetensors, the state dict's order for torch files, the metadata's order for DCP). Files
    needed to produce converted tensors stay open until the ``with`` block ends.

    Args:
        ckpt: the resolved source, or a DCP directory.
        dtype: cast floating tensors to this dtype; ``None`` keeps every dtype (bytes are copied).
        unwrap: for torch files, the key a state dict is nested under (see ``unwrap_state_dict``).

    Raises:
        CorruptCheckpointError: headers or index are inconsistent, a key is stored twice, or a
            dtype cannot be stored; a DCP directory's metadata cannot be read or holds no tensor.
        IncompleteCheckpointError: a shard is missing.

    Example:
        >>> with plan_source_tensors(resolve_ckpt_dir("t5"), dtype="fp16") as source:  # doctest: +SKIP
        ...     print(len(source.tensors), source.tensors[0].dtype)
    """
    target = code_of(dtype) if dtype is not None else None
    with contextlib.ExitStack() as stack:
        if isinstance(ckpt, DcpCheckpoint):
            yield _plan_dcp(ckpt, target)
        elif ckpt.format == "safetensors":
            yield SourceTensors(_plan_safetensors(ckpt, target, stack))
        else:
            yield SourceTensors(_plan_torch(ckpt, target, unwrap))


def _headers(ckpt: CheckpointDir) -> list[SafetensorsHeader]:
    if ckpt.weight_set is not None:
        check = check_weight_set(ckpt.weight_set)
        check.raise_first()
        for text in check.warnings:
            warnings.warn(text, CkptWarning, stacklevel=5)
        return [check.headers[p] for p in ckpt.weight_files]
    return [read_header(p) for p in ckpt.weight_files]


def _plan_safetensors(
    ckpt: CheckpointDir, target_code: str | None, stack: contextlib.ExitStack
) -> list[PlannedTensor]:
    planned: list[PlannedTensor] = []
    owner: dict[str, Path] = {}
    for header in _headers(ckpt):
        fd: int | None = None
        for info in header.tensors.values():
            _claim(owner, info.name, header.path)
            if _castable(info.dtype, target_code):
                if fd is None:
                    fd = open_regular(header.path, identity=header.identity)
                    stack.callback(os.close, fd)
                planned.append(_converted(fd, header, info, target_code))  # type: ignore[arg-type]
            else:
                planned.append(
                    PlannedTensor(
                        info.name,
                        info.dtype,
                        info.shape,
                        info.nbytes,
                        source_path=header.path,
                        source_offset=header.data_start + info.begin,
                    )
                )
    return planned


def _converted(fd: int, header: SafetensorsHeader, info: TensorInfo, code: str) -> PlannedTensor:
    # keeps torch out of the torch-free path: only a dtype conversion needs it
    from ckptkit.io.tensors import read_tensor, to_torch_dtype

    target = to_torch_dtype(code)
    nbytes = DTYPES[code].nbytes(info.numel)
    assert nbytes is not None
    return PlannedTensor(
        info.name,
        code,
        info.shape,
        nbytes,
        produce=lambda: tensor_bytes(read_tensor(fd, header, info, dtype=target)),
    )


def _claim(owner: dict[str, Path], name: str, path: Path) -> None:
    if name in owner:
        raise CorruptCheckpointError(
            f"tensor {name!r} is stored in two files: {owner[name].name} and {path.name}",
            path=path,
            fix="remove the stale file, or resave from a directory holding one copy of each tensor",
        )
    owner[name] = path


def _plan_torch(ckpt: CheckpointDir, target: str | None, unwrap: str | bool | None) -> list[PlannedTensor]:
    # keeps torch out of the torch-free path: only torch-format sources need it
    from ckptkit.io.torch_files import load_torch_file, unwrap_state_dict

    planned: list[PlannedTensor] = []
    owner: dict[str, Path] = {}
    for path in ckpt.weight_files:
        state = unwrap_state_dict(load_torch_file(path, mmap=True), unwrap, path)
        for name, tensor in state.items():
            _claim(owner, name, path)
            planned.append(_torch_tensor(name, tensor, target, path))
    return planned


def _torch_tensor(name: str, tensor: torch.Tensor, target_code: str | None, path: Path) -> PlannedTensor:
    import torch

    # keeps torch out of the torch-free path: only torch-format sources need it
    from ckptkit.io.tensors import to_torch_dtype

    if tensor.layout != torch.strided or tensor.is_quantized:
        raise CorruptCheckpointError(
            f"tensor {name!r} is {tensor.layout} / quantized; safetensors stores dense tensors only",
            path=path,
            fix="convert it to a dense tensor (tensor.to_dense()) before resaving",
        )
    stored = code_of(tensor.dtype, name=name, path=path)
    cast = to_torch_dtype(target_code) if _castable(stored, target_code) else None
    code = target_code if cast is not None else stored
    assert code is not None
    nbytes = DTYPES[code].nbytes(tensor.numel())
    assert nbytes is not None
    return PlannedTensor(name, code, tuple(tensor.shape), nbytes, produce=lambda: tensor_bytes(tensor, cast))


def _plan_dcp(source: DcpCheckpoint, target_code: str | None) -> SourceTensors:
    # keeps torch out of the torch-free path: only a DCP source needs it
    from ckptkit.io.tensors import to_torch_dtype

    metadata = _read_dcp_metadata(source.path)
    entries = _dcp_tensors(source, metadata.state_dict_metadata)
    reader = _DcpReader(source, entries)
    planned = []
    for name, (_, shape, stored) in entries.items():
        code = code_of(stored, name=name, path=source.path)
        cast = to_torch_dtype(target_code) if _castable(code, target_code) else None
        out = target_code if cast is not None else code
        assert out is not None
        nbytes = DTYPES[out].nbytes(math.prod(shape))
        assert nbytes is not None
        produce = functools.partial(_dcp_bytes, reader, name, cast)
        planned.append(PlannedTensor(name, out, shape, nbytes, produce=produce))
    return SourceTensors(planned, reader)


def _dcp_bytes(reader: _DcpReader, name: str, cast: torch.dtype | None) -> memoryview:
    return tensor_bytes(reader.take(name), cast)


def _read_dcp_metadata(path: Path) -> Any:
    import torch.distributed.checkpoint as dcp

    if not (path / DCP_METADATA_NAME).is_file():
        raise CheckpointNotFoundError(
            f"no DCP {DCP_METADATA_NAME} file in this directory",
            path=path,
            fix="point at the directory dcp.save wrote (the one holding .metadata and *.distcp files)",
        )
    try:
        return dcp.FileSystemReader(os.fspath(path)).read_metadata()
    except Exception as exc:  # whatever DCP's unpickling raises: the file is not DCP metadata
        raise CorruptCheckpointError(
            f"cannot read the DCP metadata ({type(exc).__name__}: {exc})", path=path
        ) from None


def _dcp_tensors(source: DcpCheckpoint, items: dict[str, Any]) -> dict[str, tuple[str, tuple[int, ...], Any]]:
    """Output name -> (DCP key, shape, stored torch dtype), under ``prefix``; other entries skipped."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    prefix = source.prefix or ""
    found: dict[str, tuple[str, tuple[int, ...], Any]] = {}
    skipped = []
    for key, item in items.items():
        if not key.startswith(prefix):
            continue
        if isinstance(item, TensorStorageMetadata):
            found[key[len(prefix) :]] = (key, tuple(item.size), item.properties.dtype)
        else:
            skipped.append(key)
    if skipped:
        warnings.warn(
            f"{source.path}: skipped {len(skipped)} non-tensor entries {skipped[:5]}",
            CkptWarning,
            stacklevel=6,
        )
    if not found:
        tops = sorted({k.split(".", 1)[0] + "." for k in items if "." in k})[:10]
        raise CorruptCheckpointError(
            f"no tensors{f' under prefix {prefix!r}' if prefix else ''}",
            path=source.path,
            fix="pass prefix= one of: " + ", ".join(tops),
        )
    return found


class _DcpReader:
    """Loads DCP tensors with ``dcp.load``, a batch at a time, just ahead of the writer.

    The writer asks for each tensor once, in the order of :meth:`follow` (key order until then); a
    miss loads that tensor and those after it, up to ``batch_size`` bytes, so memory holds one batch.
    """

    def __init__(self, source: DcpCheckpoint, entries: dict[str, tuple[str, tuple[int, ...], Any]]) -> None:
        self.source = source
        self.entries = entries
        self.order = list(entries)
        self.position = {name: i for i, name in enumerate(self.order)}
        self.loaded: dict[str, torch.Tensor] = {}
        self.taken: set[str] = set()

    def follow(self, order: list[str]) -> None:
        self.order = order
        self.position = {name: i for i, name in enumerate(order)}

    def take(self, name: str) -> torch.Tensor:
        if name not in self.loaded:
            self._load_from(self.position[name])
        self.taken.add(name)
        return self.loaded.pop(name)

    def _load_from(self, start: int) -> None:
        import torch
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner

        batch: list[str] = []
        size = 0
        for name in self.order[start:]:
            if name in self.taken or name in self.loaded:
                continue
            _, shape, stored = self.entries[name]
            nbytes = math.prod(shape) * stored.itemsize
            if batch and size + nbytes > self.source.batch_size:
                break
            batch.append(name)
            size += nbytes
        state = {self.entries[n][0]: torch.empty(self.entries[n][1], dtype=self.entries[n][2]) for n in batch}
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
            dcp.load(
                state,
                storage_reader=dcp.FileSystemReader(os.fspath(self.source.path)),
                planner=DefaultLoadPlanner(allow_partial_load=True),
                no_dist=True,
            )
        self.loaded.update((n, state[self.entries[n][0]]) for n in batch)
