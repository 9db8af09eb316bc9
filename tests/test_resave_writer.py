"""The shard writer on its own: reference layout, byte-range copies and their fallbacks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import ckptkit.io.byte_copy as byte_copy
import ckptkit.io.writer as writer
from ckptkit import CorruptCheckpointError
from ckptkit.format import read_header
from ckptkit.io.byte_copy import copy_range
from ckptkit.io.writer import PlannedShard, PlannedTensor, ShardWriter, build_header
from ckptkit.save.sources import tensor_bytes


def _planned(state: dict[str, torch.Tensor]) -> list[PlannedTensor]:
    from ckptkit.save.sources import code_of

    return [
        PlannedTensor(
            name,
            code_of(t.dtype),
            tuple(t.shape),
            t.numel() * t.element_size(),
            produce=lambda t=t: tensor_bytes(t),
        )
        for name, t in state.items()
    ]


def test_written_bytes_equal_safetensors_save_file(tmp_path):
    state = {
        "z.bias": torch.randn(3),
        "a.weight": torch.randn(4, 5).half(),
        "m": torch.arange(6, dtype=torch.int32),
        "b": torch.randn(2, 2, dtype=torch.float64),
        "flag": torch.tensor(True),
        "q": torch.randn(7).bfloat16(),
        "e": torch.zeros(0),
    }
    save_file(state, tmp_path / "ref.safetensors", metadata={"format": "pt"})
    with ShardWriter(tmp_path) as shard_writer:
        path = shard_writer.write(PlannedShard("out.safetensors", _planned(state)))
    assert path.read_bytes() == (tmp_path / "ref.safetensors").read_bytes()


def test_header_is_padded_to_eight_and_tensors_aligned():
    for name in ("a", "ab", "abc", "abcd", "abcde"):
        header, ordered = build_header(
            [PlannedTensor(name, "F64", (1,), 8), PlannedTensor("x", "U8", (3,), 3)], None
        )
        assert len(header) % 8 == 0
        assert header[8:].rstrip(b" ").endswith(b"}")
        assert [t.dtype for t in ordered] == ["F64", "U8"]


def test_planned_tensor_checks_its_size():
    with pytest.raises(ValueError, match="takes 8 bytes"):
        PlannedTensor("w", "F32", (2,), 7)
    with pytest.raises(ValueError, match="no dtype"):
        PlannedTensor("w", "F13", (2,), 8)


@pytest.mark.parametrize("methods", ["copy_file_range", "sendfile", "buffer"])
def test_copy_range_every_method(tmp_path, monkeypatch, methods):
    if methods != "copy_file_range":
        monkeypatch.setattr(byte_copy, "_copy_file_range", None)
    if methods == "buffer":
        monkeypatch.setattr(byte_copy, "_sendfile", None)
        monkeypatch.setattr(byte_copy, "_BUFFER_SIZE", 1000)
    monkeypatch.setattr(byte_copy, "COPY_CHUNK", 4096)
    data = os.urandom(50_000)
    (tmp_path / "src").write_bytes(data)
    calls: list[int] = []
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.write(dst, b"head")
        copy_range(src, 123, 40_000, dst, progress=calls.append)
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / "dst").read_bytes() == b"head" + data[123:40_123]
    assert sum(calls) == 40_000 and max(calls) <= 4096


def test_copy_range_refuses_a_short_source(tmp_path):
    (tmp_path / "src").write_bytes(b"x" * 100)
    src = os.open(tmp_path / "src", os.O_RDONLY)
    dst = os.open(tmp_path / "dst", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        with pytest.raises(CorruptCheckpointError, match="truncated"):
            copy_range(src, 50, 100, dst, path=tmp_path / "src")
    finally:
        os.close(src)
        os.close(dst)


def test_byte_range_tensors_copy_without_decoding(tmp_path):
    state = {f"w{i}": torch.randn(64, 3) for i in range(5)}
    save_file(state, tmp_path / "src.safetensors")
    header = read_header(tmp_path / "src.safetensors")
    planned = [
        PlannedTensor(
            t.name,
            t.dtype,
            t.shape,
            t.nbytes,
            source_path=Path(header.path),
            source_offset=header.data_start + t.begin,
        )
        for t in reversed(list(header.tensors.values()))
    ]
    assert len(writer._runs(sorted(planned, key=lambda t: t.name))) == 1  # back to back: one copy
    with ShardWriter(tmp_path, fsync=False) as shard_writer:
        out = shard_writer.write(PlannedShard("out.safetensors", planned))
    got = load_file(out)
    assert all(torch.equal(got[k], v) for k, v in state.items())
