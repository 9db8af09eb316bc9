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
from typing import Any

from ckptkit.errors import CorruptCheckpointError, UnsafeCheckpointError
from ckptkit.format.dtypes import torch_itemsize

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
}
#: At most this much pickle is read; a state dict's pickle is a few MB even for huge models.
MAX_PICKLE_SIZE = 512 * 2**20


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
class _Tensor:
    storage: _Storage
    shape: tuple[int, ...]


def _rebuild_tensor(storage: _Storage, _offset: int, size: Any, *_rest: Any) -> _Tensor:
    return _Tensor(storage, tuple(int(d) for d in size))


def _rebuild_parameter(data: _Tensor, *_rest: Any) -> _Tensor:
    return data


class _ScanUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data))
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
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if not zipfile.is_zipfile(path):
        if magic == b"PK\x03\x04":
            raise CorruptCheckpointError(
                "zip archive without its directory: the file is truncated",
                path=path,
                fix="download or copy it again",
            )
        return None
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not names:
                raise CorruptCheckpointError("zip holds no data.pkl: not a torch checkpoint", path=path)
            info = archive.getinfo(names[0])
            if info.file_size > MAX_PICKLE_SIZE:
                raise CorruptCheckpointError(f"data.pkl is {info.file_size} bytes, too large", path=path)
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
    entries: dict[str, TorchTensorEntry] = {}
    _collect(obj, "", entries)
    for entry in entries.values():
        size = record_sizes.get(entry.storage_key)
        needed = entry.storage_numel * torch_itemsize(entry.dtype)
        if size is None or size < needed:
            raise CorruptCheckpointError(
                f"storage {entry.storage_key} of tensor {entry.name!r} needs {needed} bytes "
                f"but the archive holds {size if size is not None else 'no such entry'}",
                path=path,
                fix="the file is damaged; copy it again",
            )
    return entries


def _collect(obj: Any, prefix: str, out: dict[str, TorchTensorEntry]) -> None:
    if isinstance(obj, _Tensor):
        name = prefix[:-1]
        out[name] = TorchTensorEntry(name, obj.storage.dtype, obj.shape, obj.storage.key, obj.storage.numel)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            _collect(value, f"{prefix}{key}.", out)
