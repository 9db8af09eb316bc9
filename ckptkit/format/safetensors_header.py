"""Reading and validating a safetensors header: the 8-byte length, the JSON, nothing else.

The format (safetensors ``README.md``): a little-endian u64 ``N``, ``N`` bytes of UTF-8 JSON
mapping tensor names to ``{"dtype", "shape", "data_offsets": [begin, end]}`` plus an optional
``"__metadata__"`` of str -> str, then the data buffer. Offsets are relative to the buffer; the
tensors must tile it exactly: no hole, no overlap, nothing past the end.
"""

from __future__ import annotations

import gc
import math
import operator
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.dtypes import DTYPES
from ckptkit.format.safe_files import as_path, file_identity, open_regular, os_error
from ckptkit.format.strict_json import DuplicateKeyError, loads_strict

__all__ = [
    "MAX_HEADER_SIZE",
    "SafetensorsHeader",
    "TensorInfo",
    "parse_header_bytes",
    "read_header",
]

#: The cap safetensors itself puts on a header.
MAX_HEADER_SIZE = 100_000_000


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in a safetensors file.

    Attributes:
        name: the tensor's key.
        dtype: the safetensors code (``"BF16"``).
        shape: the shape.
        begin: start of its bytes, relative to the data buffer.
        end: end of its bytes (exclusive), relative to the data buffer.
    """

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class SafetensorsHeader:
    """The validated header of one safetensors file.

    Attributes:
        path: the file.
        data_start: file offset of the data buffer (``8 + header length``).
        file_size: size of the file in bytes.
        tensors: tensor name -> :class:`TensorInfo`, in the order of their offsets.
        metadata: the ``__metadata__`` map (str -> str), empty when absent.
        identity: ``(device, inode)`` of the file the header was read from, when read from a file;
            readers check that the file they open for the data is that same file.
    """

    path: Path
    data_start: int
    file_size: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    identity: tuple[int, int] | None = field(default=None, compare=False)

    @property
    def data_size(self) -> int:
        return self.file_size - self.data_start

    def file_offset(self, name: str) -> int:
        """Absolute offset in the file of a tensor's first byte."""
        return self.data_start + self.tensors[name].begin


def read_header(path: str | os.PathLike[str]) -> SafetensorsHeader:
    """Read and validate the header of a safetensors file, without reading any tensor data.

    Args:
        path: the file.

    Returns:
        The :class:`SafetensorsHeader`.

    Raises:
        IncompleteCheckpointError: the file is missing or a link to it dangles.
        CorruptCheckpointError: the header breaks any rule of the format, or the file is shorter
            than its header says.

    Example:
        >>> header = read_header("model.safetensors")  # doctest: +SKIP
        >>> header.tensors["shared.weight"].shape  # doctest: +SKIP
        (32128, 4096)
    """
    path = as_path(path)
    fd = open_regular(path)
    try:
        try:
            stats = os.fstat(fd)
            file_size = stats.st_size
            prefix = os.pread(fd, 8, 0)
            if len(prefix) < 8:
                raise CorruptCheckpointError(
                    f"file is {file_size} bytes, too short to hold a safetensors header",
                    path=path,
                    fix="the file is truncated or not safetensors; download or copy it again",
                )
            (length,) = struct.unpack("<Q", prefix)
            _check_length(path, length, file_size)
            raw = _pread_all(fd, length, 8)
        except OSError as exc:
            raise os_error(path, exc) from None
    finally:
        os.close(fd)
    if len(raw) < length:
        raise CorruptCheckpointError(
            f"header is {length} bytes but the file ends after {len(raw)}",
            path=path,
            fix="the file is truncated; download or copy it again",
        )
    header = parse_header_bytes(raw, path=path, file_size=file_size)
    header.identity = file_identity(stats)
    return header


def _pread_all(fd: int, length: int, offset: int) -> bytes:
    """``length`` bytes at ``offset`` (fewer only at the end of the file), however the reads split."""
    first = os.pread(fd, length, offset)
    if len(first) == length or not first:
        return first
    chunks, got = [first], len(first)
    while got < length:
        chunk = os.pread(fd, length - got, offset + got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _check_length(path: Path, length: int, file_size: int) -> None:
    if length > MAX_HEADER_SIZE:
        raise CorruptCheckpointError(
            f"header length {length} is over the {MAX_HEADER_SIZE}-byte cap of the format",
            path=path,
            fix="the file is not safetensors or is damaged; download or copy it again",
        )
    if 8 + length > file_size:
        raise CorruptCheckpointError(
            f"header says it is {length} bytes but the file holds only {file_size - 8} after the length",
            path=path,
            fix="the file is truncated; download or copy it again",
        )
    if length < 2:
        raise CorruptCheckpointError(f"header length {length} is too short for JSON", path=path)


def parse_header_bytes(raw: bytes, *, path: str | os.PathLike[str], file_size: int) -> SafetensorsHeader:
    """Validate the JSON bytes of a header against the file size; see :func:`read_header`."""
    # A header makes millions of small objects and no cycles: the cyclic collector, run again
    # and again as they are allocated, would take longer than the parsing itself.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _parse_header_bytes(raw, as_path(path), file_size)
    finally:
        if enabled:
            gc.enable()


def _parse_header_bytes(raw: bytes, path: Path, file_size: int) -> SafetensorsHeader:
    try:
        parsed = loads_strict(raw, constants=False)
    except DuplicateKeyError as dup:
        raise CorruptCheckpointError(f"header names {dup.key!r} twice", path=path) from None
    except UnicodeDecodeError as exc:
        raise CorruptCheckpointError(
            f"header is not UTF-8 ({exc.reason} at byte {exc.start})", path=path
        ) from None
    except (ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(f"header is not valid JSON ({exc})", path=path) from None
    if not isinstance(parsed, dict):
        raise CorruptCheckpointError(f"header is a JSON {type(parsed).__name__}, not an object", path=path)

    if b"\\u" in raw and _SURROGATE_ESCAPE.search(raw):  # a byte search first: escapes are rare
        _refuse_lone_surrogates(parsed, path)
    metadata = _parse_metadata(parsed.pop("__metadata__", None), path)
    data_start = 8 + len(raw)
    data_size = file_size - data_start
    tensors = [_parse_tensor(name, entry, path) for name, entry in parsed.items()]
    tensors.sort(key=_BY_OFFSETS)
    cursor = 0
    for info in tensors:
        if info.begin < cursor:
            raise CorruptCheckpointError(
                f"tensor {info.name!r} at bytes [{info.begin}, {info.end}) overlaps the tensor before it",
                path=path,
            )
        if info.begin > cursor:
            raise CorruptCheckpointError(
                f"hole in the data buffer: bytes [{cursor}, {info.begin}) belong to no tensor "
                f"(next is {info.name!r})",
                path=path,
            )
        cursor = info.end
    if cursor > data_size:
        raise CorruptCheckpointError(
            f"tensors need {cursor} bytes of data but the file holds {data_size}",
            path=path,
            fix="the file is truncated (an interrupted download?); download or copy it again",
        )
    if cursor < data_size:
        raise CorruptCheckpointError(
            f"{data_size - cursor} bytes at the end of the data buffer belong to no tensor", path=path
        )
    return SafetensorsHeader(
        path=path,
        data_start=data_start,
        file_size=file_size,
        tensors={t.name: t for t in tensors},
        metadata=metadata,
    )


def _parse_metadata(value: object, path: Path) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise CorruptCheckpointError("__metadata__ must map strings to strings", path=path)
    return dict(value)


def _parse_tensor(name: str, entry: object, path: Path) -> TensorInfo:
    # The fast path: a well-formed entry in a few type checks (headers of 1e6 tensors exist).
    # Anything it does not accept goes to the checks below, which say what is wrong.
    if type(entry) is dict:
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        info = DTYPES.get(dtype) if type(dtype) is str else None
        if info is not None and type(shape) is list and type(offsets) is list and len(offsets) == 2:
            begin, end = offsets
            if type(begin) is int and type(end) is int and 0 <= begin <= end < _U64:
                numel = 1
                for dim in shape:
                    if type(dim) is not int or not 0 <= dim < _U64:
                        break
                    numel *= dim
                    if numel >= _U64:
                        break
                else:
                    # The bytes they fill, in bits (info.nbytes(numel) == end - begin, without a call).
                    if numel * info.bits < _U64 and numel * info.bits == (end - begin) * 8:
                        return TensorInfo(name, info.code, tuple(shape), begin, end)
    return _parse_tensor_checked(name, entry, path)


def _parse_tensor_checked(name: str, entry: object, path: Path) -> TensorInfo:
    if not isinstance(entry, dict):
        raise CorruptCheckpointError(f"entry of tensor {name!r} is not an object", path=path)
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPES:
        raise CorruptCheckpointError(
            f"tensor {name!r} has unknown dtype {dtype!r}; known: {', '.join(DTYPES)}", path=path
        )
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise CorruptCheckpointError(f"tensor {name!r} has a bad shape {_short(shape)}", path=path)
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(_is_count(o) for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise CorruptCheckpointError(f"tensor {name!r} has bad data_offsets {offsets!r}", path=path)
    if any(dim >= _U64 for dim in shape):
        raise CorruptCheckpointError(
            f"tensor {name!r} has shape {_short(shape)}, past 64-bit sizes", path=path
        )
    numel = 1
    for dim in shape:  # in order, as safetensors multiplies (checked, in 64 bits)
        numel *= dim
        if numel >= _U64:
            raise CorruptCheckpointError(
                f"tensor {name!r} has shape {_short(shape)}, whose element count overflows 64 bits",
                path=path,
            )
    if numel * DTYPES[dtype].bits >= _U64 or any(o >= _U64 for o in offsets):
        raise CorruptCheckpointError(f"tensor {name!r} is too large for the format (64-bit sizes)", path=path)
    begin, end = offsets
    expected = DTYPES[dtype].nbytes(numel)
    if expected != end - begin:
        raise CorruptCheckpointError(
            f"tensor {name!r} of shape {shape} and dtype {dtype} needs {expected} bytes "
            f"but its data_offsets span {end - begin}",
            path=path,
        )
    return TensorInfo(name=name, dtype=dtype, shape=tuple(shape), begin=begin, end=end)


#: Tensors in the order of their bytes (a C key: one Python call per tensor less than a lambda).
_BY_OFFSETS = operator.attrgetter("begin", "end")
#: Sizes and counts in the format are 64-bit unsigned (Rust ``usize``).
_U64 = 2**64
#: A ``\\uD800``-``\\uDFFF`` escape: the only way lone surrogates get into parsed JSON.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(parsed: dict[str, object], path: Path) -> None:
    """Refuse strings safetensors' parser refuses: lone surrogates (a proper pair decodes to one
    character and is fine)."""

    def check(text: str) -> None:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise CorruptCheckpointError(
                f"header holds a lone UTF-16 surrogate in {text[:40].encode('utf-8', 'backslashreplace')!r}; "
                "safetensors cannot read it",
                path=path,
            ) from None

    for key, value in parsed.items():
        check(key)
        if isinstance(value, dict):
            for inner_key, inner in value.items():
                check(inner_key)
                if isinstance(inner, str):
                    check(inner)


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
