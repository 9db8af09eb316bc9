from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from ckptkit import CorruptCheckpointError
from ckptkit.format.safetensors_header import read_header
from ckptkit.io import reader
from ckptkit.io.buffers import raw_bytes
from ckptkit.io.reader import TensorRead, read_tensors
from ckptkit.io.tensors import to_torch_dtype


@pytest.fixture
def mixed_file(tmp_path):
    torch.manual_seed(0)
    tensors = {f"tiny.{i}": torch.randn(7) for i in range(50)}
    tensors["big"] = torch.randn(300, 70).to(torch.bfloat16)
    tensors["ints"] = torch.arange(1000, dtype=torch.int64)
    tensors["empty"] = torch.empty(0, 3)
    tensors["scalar"] = torch.tensor(3.5)
    path = tmp_path / "mixed.safetensors"
    save_file(tensors, path)
    return path


def _targets(header, dtype=None):
    return {
        name: torch.empty(
            info.shape,
            dtype=dtype
            if dtype is not None and to_torch_dtype(info.dtype).is_floating_point
            else to_torch_dtype(info.dtype),
        )
        for name, info in header.tensors.items()
    }


@pytest.mark.parametrize("chunk", [reader.CHUNK_BYTES, 256, 6])
@pytest.mark.parametrize("threads", [1, 4])
def test_batched_and_chunked_reads_match(mixed_file, monkeypatch, chunk, threads):
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)
    header = read_header(mixed_file)
    out = _targets(header)
    read_tensors([TensorRead(header, header.tensors[n], t) for n, t in out.items()], num_threads=threads)
    want = load_file(mixed_file)
    assert all(torch.equal(out[k], v) and out[k].dtype == v.dtype for k, v in want.items())


def test_staged_cast_matches(mixed_file, monkeypatch):
    monkeypatch.setattr(reader, "CHUNK_BYTES", 64)
    header = read_header(mixed_file)
    out = _targets(header, torch.float64)
    read_tensors([TensorRead(header, header.tensors[n], t) for n, t in out.items()], num_threads=3)
    for key, value in load_file(mixed_file).items():
        want = value.double() if value.dtype.is_floating_point else value
        assert out[key].dtype == want.dtype and torch.equal(out[key], want), key


@pytest.mark.parametrize("chunk", [reader.CHUNK_BYTES, 64])
def test_cast_from_the_maps_matches_and_never_stages(mixed_file, monkeypatch, chunk):
    monkeypatch.setattr(reader, "CHUNK_BYTES", chunk)

    def no_staging(job, local):
        raise AssertionError(f"{job.read.info.name} went through a staging buffer")

    monkeypatch.setattr(reader, "_read_staged", no_staging)
    header = read_header(mixed_file)
    out = _targets(header, torch.float16)
    reads = [TensorRead(header, header.tensors[n], t) for n, t in out.items()]
    read_tensors(reads, num_threads=3, maps=reader.FileMaps())
    for key, value in load_file(mixed_file).items():
        want = value.half() if value.dtype.is_floating_point else value
        assert out[key].dtype == want.dtype and torch.equal(out[key], want), key
    assert all(t.untyped_storage().resizable() for t in out.values())  # private memory, not the map


def test_a_misaligned_tensor_cast_with_maps_is_staged(tmp_path):
    import struct

    path = _handmade(
        tmp_path / "odd.safetensors",
        {
            "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [2, 10]},
        },
        b"\x01\x02" + struct.pack("<2f", 1.5, -2.25),
    )
    header = read_header(path)
    out = torch.empty(2, dtype=torch.float64)
    read_tensors([TensorRead(header, header.tensors["b"], out)], maps=reader.FileMaps())
    assert out.tolist() == [1.5, -2.25]


def test_file_shrunk_after_header_is_named(mixed_file):
    header = read_header(mixed_file)
    mixed_file.write_bytes(mixed_file.read_bytes()[:-100])
    out = _targets(header)
    with pytest.raises(CorruptCheckpointError, match=r"mixed.safetensors.*ended"):
        read_tensors([TensorRead(header, header.tensors[n], t) for n, t in out.items()])


def test_wrong_target_size_is_refused(mixed_file):
    header = read_header(mixed_file)
    with pytest.raises(Exception, match="elements"):
        read_tensors([TensorRead(header, header.tensors["big"], torch.empty(3, dtype=torch.bfloat16))])


def test_raw_bytes_views_any_dtype():
    t = torch.zeros(3, dtype=torch.bfloat16)
    view = raw_bytes(t)
    assert len(view) == 6
    view[0:2] = torch.tensor([2.0], dtype=torch.bfloat16).view(torch.uint8).numpy().tobytes()
    assert t[0].item() == 2.0


_PENDING: list[_DeferredCopy] = []


class _DeferredCopy:
    """A fake device copy that reads its staging buffer only when waited for, as a DMA engine may."""

    def __init__(self, stage, job):
        self.stage, self.job = stage, job
        _PENDING.append(self)

    def synchronize(self):
        part = self.job.read.target.view(-1)[self.job.first : self.job.first + self.job.count]
        part.copy_(self.stage.view(to_torch_dtype(self.job.read.info.dtype)))
        _PENDING.remove(self)


def test_staging_pipeline_overlaps_and_never_reuses_a_buffer_in_flight(mixed_file, monkeypatch):
    monkeypatch.setattr(reader, "CHUNK_BYTES", 64)
    header = read_header(mixed_file)
    out = _targets(header, torch.float64)
    reads = [TensorRead(header, header.tensors[n], t) for n, t in out.items()]
    pipeline = reader.StagingPipeline(lambda n: torch.empty(n, dtype=torch.uint8), _DeferredCopy)
    in_flight = []
    with reader._open_files(reads) as fds:
        for job in reader._plan(reads, fds):
            if job.buffers is None:
                pipeline.run(job)
                in_flight.append(len(_PENDING))
            else:
                reader._read_direct(job)
        pipeline.finish()
    assert not _PENDING
    assert len(in_flight) > 10 and max(in_flight) == 2  # a copy is in flight while the next chunk is read
    for key, value in load_file(mixed_file).items():
        want = value.double() if value.dtype.is_floating_point else value
        assert torch.equal(out[key], want), key


def _handmade(path, entries, data: bytes):
    import json
    import struct

    header = json.dumps(entries).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


def test_file_maps_view_aligned_tensors_and_decline_misaligned_ones(tmp_path):
    import struct

    path = _handmade(
        tmp_path / "odd.safetensors",
        {
            "a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
            "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]},
            "c": {"dtype": "U8", "shape": [2], "data_offsets": [6, 8]},
        },
        b"\x01\x02" + struct.pack("<f", 1.5) + b"\x03\x04",
    )
    header = read_header(path)
    maps = reader.FileMaps()
    assert maps.tensor(header, header.tensors["b"]) is None  # offset 2 is not a float32 boundary
    assert maps.tensor(header, header.tensors["c"]).tolist() == [3, 4]
    from ckptkit import load_sharded

    got = load_sharded(path)
    assert got["a"].tolist() == [1, 2] and got["b"].tolist() == [1.5] and got["c"].tolist() == [3, 4]
    assert got["b"].untyped_storage().resizable() and not got["a"].untyped_storage().resizable()


def test_file_maps_refuse_a_file_truncated_after_its_header_was_read(mixed_file):
    header = read_header(mixed_file)
    mixed_file.write_bytes(mixed_file.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpointError, match=r"mixed.safetensors.*bytes"):
        reader.FileMaps().tensor(header, header.tensors["big"])
