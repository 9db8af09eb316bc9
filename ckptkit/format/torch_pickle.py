"""Reading what a torch zip checkpoint holds — names, dtypes, shapes — without torch.

``torch.save`` writes a zip whose ``data.pkl`` describes every tensor; the bytes live in
separate ``data/<key>`` entries. A restricted unpickler walks ``data.pkl`` with stand-ins for the
few torch globals a state dict uses, and refuses every other global, so nothing in the file can
run. This mirrors what ``torch.load(weights_only=True)`` allows for plain state dicts.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ckptkit.errors import CorruptCheckpointError, UnsafeCheckpointError
from ckptkit.format.dtypes import DTYPES, torch_itemsize
from ckptkit.format.safe_files import open_regular_file

__all__ = ["TorchTensorEntry", "scan_torch_file"]

_STORAGE_DTYPES = {
    "DoubleStorage": "float64",
    "FloatStorage": "float32",
    "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
    "ComplexFloatStorage": "complex64",
    "Float8_e4m3fnStorage": "float8_e4m3fn",
    "Float8_e5m2Storage": "float8_e5m2",
    "ComplexDoubleStorage": "complex128",
    "ComplexHalfStorage": "complex32",
}
#: dtypes torch names as globals (``torch.uint16``) in files saved with ``_rebuild_tensor_v3``;
#: ``torch.load(weights_only=True)`` allows them all.
_TORCH_DTYPE_NAMES = frozenset(
    {d.name for d in DTYPES.values()}
    | {"complex32", "complex128", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu"}
)
#: Bytes per element of dtypes the safetensors table does not list.
_EXTRA_ITEMSIZE = {"complex32": 4, "complex128": 16}
#: At most this much pickle is read; a state dict's pickle is a few MB even for huge models.
MAX_PICKLE_SIZE = 64 * 2**20


@dataclass(frozen=True)
class TorchTensorEntry:
    """One tensor of a torch zip checkpoint, as its pickle describes it."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    storage_key: str
    storage_numel: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class _StorageType:
    dtype: str


@dataclass(frozen=True)
class _Storage:
    dtype: str
    key: str
    numel: int


@dataclass(frozen=True)
class _Dtype:
    name: str


@dataclass(frozen=True)
class _Tensor:
    storage: _Storage
    shape: tuple[int, ...]
    offset: int = 0
    stride: tuple[int, ...] | None = None
    dtype: str | None = None
    span: int | None = None  # a sparse tensor: what its values reach, not its dense shape

    @property
    def extent(self) -> int:
        """Elements of the storage the view reaches (offset included)."""
        if self.span is not None:
            return self.span
        if any(d == 0 for d in self.shape):
            return 0
        if self.stride is None or len(self.stride) != len(self.shape):
            return self.offset + math.prod(self.shape)
        return self.offset + 1 + sum((d - 1) * abs(st) for d, st in zip(self.shape, self.stride, strict=True))


def _ints(values: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in values)


def _rebuild_tensor(storage: _Storage, offset: int, size: Any, stride: Any = None, *_rest: Any) -> _Tensor:
    return _Tensor(storage, _ints(size), int(offset), _ints(stride) if stride is not None else None)


def _rebuild_tensor_v3(
    storage: _Storage, offset: int, size: Any, stride: Any, _grad: Any, _hooks: Any, dtype: Any, *_rest: Any
) -> _Tensor:
    name = dtype.name if isinstance(dtype, _Dtype) else "unknown"
    return _Tensor(storage, _ints(size), int(offset), _ints(stride), name)


def _rebuild_sparse_tensor(layout: Any, data: Any, *_rest: Any) -> _Tensor:
    # COO: (indices, values, size, ...); the values carry the dtype and the bytes that count.
    if layout == "torch.sparse_coo" and isinstance(data, tuple) and len(data) >= 3:
        values = data[1]
        if isinstance(values, _Tensor):
            return _Tensor(values.storage, _ints(data[2]), dtype=values.dtype, span=values.extent)
    raise ValueError(f"sparse layout {layout!r} is not a plain COO tensor")


def _rebuild_parameter(data: _Tensor, *_rest: Any) -> _Tensor:
    return data


class _ScanUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes | BinaryIO, path: Path) -> None:
        super().__init__(io.BytesIO(data) if isinstance(data, bytes) else data)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if module == "torch._utils" and name == "_rebuild_tensor_v3":
            return _rebuild_tensor_v3
        if (module, name) == ("torch.storage", "UntypedStorage"):
            return _StorageType("uint8")  # numel counts bytes; the tensor carries its dtype
        if module == "torch" and name in _TORCH_DTYPE_NAMES:
            return _Dtype(name)
        if (module, name) == ("torch", "Size"):
            return tuple
        if (module, name) == ("torch.serialization", "_get_layout"):
            return lambda layout: layout
        if (module, name) == ("torch._utils", "_rebuild_sparse_tensor"):
            return _rebuild_sparse_tensor
        raise UnsafeCheckpointError(
            f"pickle refers to {module}.{name}, which weights_only loading refuses (it could run code)",
            path=self._path,
            fix="only load it with torch.load(weights_only=False) if you trust its origin; "
            "better convert it to safetensors in a trusted environment",
        )

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise CorruptCheckpointError(f"unexpected persistent id {pid!r:.80}", path=self._path)
        storage_type, key = pid[1], pid[2]
        numel = pid[4] if len(pid) > 4 and isinstance(pid[4], int) else 0
        dtype = storage_type.dtype if isinstance(storage_type, _StorageType) else "unknown"
        return _Storage(dtype, str(key), numel)


def scan_torch_file(path: str | os.PathLike[str]) -> dict[str, TorchTensorEntry] | None:
    """The tensors a torch zip checkpoint holds, without importing torch or running its pickle.

    Returns ``None`` for the pre-1.6 (non-zip) format, which needs torch to read.
    Tensors nested under a wrapper (``{"state_dict": {...}}``) are named with dotted paths
    (``"state_dict.layer.weight"``).

    Raises:
        UnsafeCheckpointError: the pickle names a global outside a plain state dict.
        CorruptCheckpointError: the zip or the pickle is damaged.

    Example:
        >>> entries = scan_torch_file("pytorch_model.bin")  # doctest: +SKIP
        >>> entries["encoder.block.0.layer.0.SelfAttention.q.weight"].shape  # doctest: +SKIP
        (4096, 4096)
    """
    path = Path(path)
    with open_regular_file(path) as handle:
        return _scan_open(path, handle)


def _scan_open(path: Path, handle: BinaryIO) -> dict[str, TorchTensorEntry] | None:
    magic = handle.read(4)
    if not zipfile.is_zipfile(handle):
        if magic == b"PK\x03\x04":
            raise CorruptCheckpointError(
                "zip archive without its directory: the file is truncated",
                path=path,
                fix="download or copy it again",
            )
        handle.seek(0)
        _check_legacy_pickle(path, handle)
        return None
    try:
        handle.seek(0)
        with zipfile.ZipFile(handle) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not names:
                raise CorruptCheckpointError("zip holds no data.pkl: not a torch checkpoint", path=path)
            info = archive.getinfo(names[0])
            if info.file_size > MAX_PICKLE_SIZE:
                raise CorruptCheckpointError(
                    f"data.pkl expands to {info.file_size} bytes, over the {MAX_PICKLE_SIZE}-byte cap; "
                    "it was not read",
                    path=path,
                    fix="a state dict's pickle is a few MB; check where the file came from",
                )
            data = archive.read(info)
            record_sizes = {
                n.rsplit("/data/", 1)[-1]: archive.getinfo(n).file_size
                for n in archive.namelist()
                if "/data/" in n
            }
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CorruptCheckpointError(
            f"damaged zip ({exc})", path=path, fix="the file is truncated or damaged; copy it again"
        ) from None
    try:
        obj = _ScanUnpickler(data, path).load()
    except (UnsafeCheckpointError, CorruptCheckpointError):
        raise
    except Exception as exc:  # a damaged pickle can fail in many ways; none of them runs code
        raise CorruptCheckpointError(f"damaged pickle ({type(exc).__name__}: {exc})", path=path) from None
    entries: dict[str, tuple[TorchTensorEntry, _Tensor]] = {}
    try:
        _collect(obj, "", entries)
    except RecursionError:
        raise CorruptCheckpointError(
            "the pickle nests dicts too deeply (or in a loop) to be a state dict", path=path
        ) from None
    except _NonStringKey as exc:
        raise CorruptCheckpointError(
            f"state dict has keys that are not strings (first: {exc})",
            path=path,
            fix="re-save it with string keys (the names of the parameters)",
        ) from None
    for entry, view in entries.values():
        size = record_sizes.get(entry.storage_key)
        needed = max(
            entry.storage_numel * _itemsize(view.storage.dtype), view.extent * _itemsize(entry.dtype)
        )
        if size is None or size < needed:
            raise CorruptCheckpointError(
                f"storage {entry.storage_key} of tensor {entry.name!r} (shape {list(entry.shape)}) needs "
                f"{needed} bytes but the archive holds {size if size is not None else 'no such entry'}",
                path=path,
                fix="the file is damaged; copy it again",
            )
    return {name: entry for name, (entry, _) in entries.items()}


#: The first object of torch's pre-1.6 format (``torch.serialization.MAGIC_NUMBER``).
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _check_legacy_pickle(path: Path, handle: BinaryIO) -> None:
    """Refuse a non-zip torch file (pre-1.6 format, or any plain pickle) that names globals
    ``weights_only`` refuses — ``os.system`` in a protocol-0 pickle included — without running it.

    Only the pickles are read (torch's legacy format: magic, protocol, system info, the object);
    the raw storages that follow are not.
    """
    unpickler = _ScanUnpickler(handle, path)
    try:
        first = unpickler.load()
        if first == _LEGACY_MAGIC:
            for _ in range(3):  # protocol version, system info, the state dict
                unpickler.load()
    except (UnsafeCheckpointError, CorruptCheckpointError):
        raise
    except RecursionError:
        raise CorruptCheckpointError(
            "the pickle nests objects too deeply to be a state dict", path=path
        ) from None
    except Exception as exc:  # a damaged pickle can fail in many ways; none of them runs code
        raise CorruptCheckpointError(
            f"not a readable torch file ({type(exc).__name__}: {str(exc)[:120]})", path=path
        ) from None


def _itemsize(dtype: str) -> int:
    return _EXTRA_ITEMSIZE.get(dtype) or torch_itemsize(dtype)


def _collect(
    obj: Any, prefix: str, out: dict[str, tuple[TorchTensorEntry, _Tensor]], seen: set[int] | None = None
) -> None:
    seen = set() if seen is None else seen
    if isinstance(obj, _Tensor):
        name = prefix[:-1]
        dtype = obj.dtype or obj.storage.dtype
        # The storage's element count in the tensor's own dtype (an untyped storage counts bytes).
        numel = obj.storage.numel * _itemsize(obj.storage.dtype) // _itemsize(dtype)
        out[name] = (TorchTensorEntry(name, dtype, obj.shape, obj.storage.key, numel), obj)
    elif isinstance(obj, dict):
        if id(obj) in seen:  # a dict holding itself: torch.load reads it; list its tensors once
            return
        seen.add(id(obj))
        for key, value in obj.items():
            if not isinstance(key, str):
                raise _NonStringKey(key)
            _collect(value, f"{prefix}{key}.", out, seen)


class _NonStringKey(Exception):
    def __init__(self, key: object) -> None:
        super().__init__(repr(key)[:40])
