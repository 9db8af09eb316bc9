"""The header reader against files written by safetensors itself and hand-made broken ones."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ckptkit.errors import CorruptCheckpointError, IncompleteCheckpointError
from ckptkit.format.safetensors_header import MAX_HEADER_SIZE, read_header


def _write_raw(path: Path, header: object, data: bytes = b"", *, raw_header: bytes | None = None) -> Path:
    blob = raw_header if raw_header is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def test_reads_what_safetensors_wrote(tmp_path: Path) -> None:
    tensors = {
        "a": torch.randn(3, 4),
        "b": torch.zeros(5, dtype=torch.bfloat16),
        "c": torch.arange(7, dtype=torch.int64),
        "empty": torch.empty(0, 3),
        "scalar": torch.tensor(1.5, dtype=torch.float16),
    }
    path = tmp_path / "x.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    header = read_header(path)
    assert set(header.tensors) == set(tensors)
    assert header.metadata == {"format": "pt"}
    for name, tensor in tensors.items():
        info = header.tensors[name]
        assert info.shape == tuple(tensor.shape)
        assert info.nbytes == tensor.numel() * tensor.element_size()
        raw = path.read_bytes()[header.data_start + info.begin : header.data_start + info.end]
        assert raw == tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes()
    assert header.data_start + sum(i.nbytes for i in header.tensors.values()) == path.stat().st_size


GOOD = {"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize(
    ("header", "data", "match"),
    [
        ({"t": {"dtype": "F99", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8, "unknown dtype"),
        ({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8, "needs 12 bytes"),
        ({"t": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8, "bad shape"),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, b"\0" * 8, "bad data_offsets"),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}}, b"\0" * 8, "bad data_offsets"),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4, "truncated"),
        ({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 12, "belong to no tensor"),
        (
            {
                "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
            },
            b"\0" * 12,
            "overlaps",
        ),
        (
            {
                "a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]},
            },
            b"\0" * 12,
            "hole",
        ),
        (
            {"t": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}},
            b"\0" * 8,
            "overflows 64 bits",
        ),
        ({"t": {"dtype": "F32", "shape": [2**20, 2**20], "data_offsets": [0, 8]}}, b"\0" * 8, "needs"),
        ({"t": [1, 2]}, b"", "not an object"),
        ({"__metadata__": {"k": 1}, **GOOD}, b"\0" * 8, "__metadata__"),
        ({"t": {"dtype": "F32", "shape": [True, 2], "data_offsets": [0, 8]}}, b"\0" * 8, "bad shape"),
    ],
)
def test_rule_violations_raise_corrupt(tmp_path: Path, header: object, data: bytes, match: str) -> None:
    path = _write_raw(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(CorruptCheckpointError, match=match) as info:
        read_header(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2, 3]", "not an object"),
        (b'{"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, "a": {}}', "twice"),
    ],
)
def test_bad_json_raises_corrupt(tmp_path: Path, raw: bytes, match: str) -> None:
    path = _write_raw(tmp_path / "bad.safetensors", None, raw_header=raw)
    with pytest.raises(CorruptCheckpointError, match=match):
        read_header(path)


def test_huge_header_length_is_refused_without_allocating(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", 2**60) + b"{}")
    with pytest.raises(CorruptCheckpointError, match="cap"):
        read_header(path)
    path.write_bytes(struct.pack("<Q", MAX_HEADER_SIZE - 1) + b"{}")
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        read_header(path)


def test_short_and_missing_files(tmp_path: Path) -> None:
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\1\0\0")
    with pytest.raises(CorruptCheckpointError, match="too short"):
        read_header(short)
    with pytest.raises(IncompleteCheckpointError, match="does not exist"):
        read_header(tmp_path / "absent.safetensors")
    link = tmp_path / "dangling.safetensors"
    link.symlink_to("../../blobs/0123")
    with pytest.raises(IncompleteCheckpointError, match="blobs/0123"):
        read_header(link)


def test_header_padded_with_spaces_is_accepted(tmp_path: Path) -> None:
    blob = json.dumps(GOOD).encode() + b"    "
    path = _write_raw(tmp_path / "pad.safetensors", None, b"\0" * 8, raw_header=blob)
    assert read_header(path).tensors["t"].shape == (2,)


def test_sub_byte_and_fp8_dtypes(tmp_path: Path) -> None:
    header = {
        "f4": {"dtype": "F4", "shape": [4], "data_offsets": [0, 2]},
        "f8": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [2, 4]},
    }
    path = _write_raw(tmp_path / "q.safetensors", header, b"\0" * 4)
    parsed = read_header(path)
    assert parsed.tensors["f4"].nbytes == 2
    bad = {"f4": {"dtype": "F4", "shape": [3], "data_offsets": [0, 2]}}
    with pytest.raises(CorruptCheckpointError):
        read_header(_write_raw(tmp_path / "q2.safetensors", bad, b"\0" * 2))
