from __future__ import annotations

import functools
import itertools

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


@pytest.fixture
def torch_threads():
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [None, 1, 4])
@pytest.mark.parametrize("intra_op", [2, 1])
def test_casts_from_the_maps_run_on_the_calling_thread_beside_the_reads(
    mixed_file, monkeypatch, torch_threads, threads, intra_op
):
    import threading

    torch_threads(intra_op)
    monkeypatch.setattr(reader, "CHUNK_BYTES", 256)  # several chunks per tensor, several jobs
    cast_on: list[int] = []
    cast_mapped = reader._cast_mapped

    def spy(job):
        cast_on.append(threading.get_ident())
        cast_mapped(job)

    monkeypatch.setattr(reader, "_cast_mapped", spy)
    sized: list[str] = []  # which default sized the pool

    def recorded(name, default):
        sized.append(name)
        return default()

    for name in ("default_num_threads", "_staging_threads"):
        monkeypatch.setattr(reader, name, functools.partial(recorded, name, getattr(reader, name)))
    header = read_header(mixed_file)
    out = _targets(header, torch.float64)  # the float32 tensors are cast from the map
    out["big"] = torch.empty(300, 70, dtype=torch.bfloat16)  # like the ints, read as stored

    class Bar:
        total = 0

        def update(self, nbytes):
            Bar.total += nbytes

    reads = [TensorRead(header, header.tensors[n], t) for n, t in out.items()]
    read_tensors(reads, num_threads=threads, progress=Bar(), maps=reader.FileMaps())
    assert cast_on
    if intra_op > 1 or threads == 1:  # torch splits each cast, or there is no pool: the caller casts
        assert set(cast_on) == {threading.get_ident()}
    else:  # one intra-op thread and a pool: the casts stay in the pool, several at once
        assert threading.get_ident() not in cast_on
    if threads is None:  # a pool that only reads as stored gets the streams' size, else few threads
        assert sized == (["default_num_threads"] if intra_op > 1 else ["_staging_threads"])
    assert Bar.total == sum(info.nbytes for info in header.tensors.values())
    for key, value in load_file(mixed_file).items():
        want = value.to(out[key].dtype)
        assert out[key].dtype == want.dtype and torch.equal(out[key], want), key


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
                reader.read_waiting(job)
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


def test_file_maps_map_a_file_once_per_dtype_and_never_write_to_it(mixed_file, monkeypatch):
    header = read_header(mixed_file)
    before = mixed_file.read_bytes()
    mapped = []
    original = reader.FileMaps._map

    def spy(self, header, dtype):
        mapped.append(dtype)
        return original(self, header, dtype)

    monkeypatch.setattr(reader.FileMaps, "_map", spy)
    maps = reader.FileMaps()
    views = {name: maps.tensor(header, info) for name, info in header.tensors.items()}
    expected = load_file(mixed_file)
    assert views["empty"] is None  # no bytes: nothing to map
    viewed = {name: view for name, view in views.items() if view is not None}
    assert {"big", "ints", "scalar", "tiny.0", "tiny.49"} <= viewed.keys()
    for name, view in viewed.items():
        assert view.dtype == expected[name].dtype and torch.equal(view, expected[name]), name
        assert not view.untyped_storage().resizable(), name  # a map, not private memory
    assert sorted(map(str, mapped)) == sorted({str(view.dtype) for view in viewed.values()})
    assert viewed["tiny.0"].untyped_storage().data_ptr() == viewed["tiny.49"].untyped_storage().data_ptr()
    viewed["big"].add_(1)  # copy-on-write: the page is copied, the file never changes
    viewed["ints"].zero_()
    assert mixed_file.read_bytes() == before


def test_file_maps_view_a_tensor_that_ends_before_a_tail_shorter_than_its_dtype(tmp_path):
    import struct

    path = _handmade(
        tmp_path / "tail.safetensors",
        {
            "w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "tail": {"dtype": "U8", "shape": [3], "data_offsets": [8, 11]},
        },
        struct.pack("<2f", 1.5, -2.0) + b"\x07\x08\x09",
    )
    assert path.stat().st_size % 4 == 3  # the float32 map stops 3 bytes short of the end
    header = read_header(path)
    maps = reader.FileMaps()
    assert maps.tensor(header, header.tensors["w"]).tolist() == [1.5, -2.0]
    assert maps.tensor(header, header.tensors["tail"]).tolist() == [7, 8, 9]


def test_file_maps_refuse_a_file_truncated_after_its_header_was_read(mixed_file):
    header = read_header(mixed_file)
    mixed_file.write_bytes(mixed_file.read_bytes()[:-100])
    with pytest.raises(CorruptCheckpointError, match=r"mixed.safetensors.*bytes"):
        reader.FileMaps().tensor(header, header.tensors["big"])


# -- reads the page cache serves at once, and reads that wait for the disk -----------------------


@pytest.fixture
def big_file(tmp_path):
    torch.manual_seed(1)
    tensors = {f"w.{i}": torch.randn(256, 256) for i in range(6)}  # 256 KiB each
    tensors.update({f"tiny.{i}": torch.randn(7) for i in range(100)})  # 28-byte iovecs in one batch
    path = tmp_path / "big.safetensors"
    save_file(tensors, path)
    return path


def _read_split(path, monkeypatch, *, threads=4, progress=None):
    """read_tensors with more threads than CPUs (as the default on a small machine), in small chunks."""
    monkeypatch.setattr(reader, "_cpus", lambda: 1)
    monkeypatch.setattr(reader, "CHUNK_BYTES", 64 * 2**10)
    header = read_header(path)
    out = _targets(header)
    reads = [TensorRead(header, header.tensors[n], t) for n, t in out.items()]
    read_tensors(reads, num_threads=threads, progress=progress)
    return out


def _spy_waiting(monkeypatch):
    calls = []
    real = reader.read_waiting

    def spy(job, **kwargs):
        calls.append(job)
        return real(job, **kwargs)

    monkeypatch.setattr(reader, "read_waiting", spy)
    return calls


def _nowait_works(path) -> bool:
    import os

    fd = os.open(path, os.O_RDONLY)
    try:
        return os.preadv(fd, [bytearray(4096)], 0, os.RWF_NOWAIT) == 4096
    except OSError:
        return False
    finally:
        os.close(fd)


def test_a_cached_file_is_read_without_waiting_reads(big_file, monkeypatch):
    big_file.read_bytes()  # in the page cache
    if not _nowait_works(big_file):
        pytest.skip("this file system does not serve RWF_NOWAIT reads")
    calls = _spy_waiting(monkeypatch)
    out = _read_split(big_file, monkeypatch)
    assert all(torch.equal(out[k], v) for k, v in load_file(big_file).items())
    assert calls == []  # every chunk came from the page cache on the CPU threads


def test_reads_that_would_wait_are_finished_by_the_waiting_threads(big_file, monkeypatch):
    import os

    real = os.preadv
    served = []  # (offset, bytes served at once) of every RWF_NOWAIT read

    def half_cached(fd, buffers, offset, flags=0):
        # The page cache "holds" the first 1000 bytes of every other read and none of the rest:
        # a short read (ending inside a buffer of a batch), or EAGAIN, as RWF_NOWAIT does for
        # pages that are not cached.
        if flags:
            if len(served) % 2:
                served.append((offset, 0))
                raise BlockingIOError(11, "would block")
            first, left = [], 1000
            for buffer in buffers:
                if left:
                    first.append(memoryview(buffer)[:left])
                    left -= len(first[-1])
            served.append((offset, real(fd, first, offset)))
            return served[-1][1]
        return real(fd, buffers, offset)

    class Progress:
        total = 0

        def update(self, nbytes):
            Progress.total += nbytes

    monkeypatch.setattr(os, "preadv", half_cached)
    calls = _spy_waiting(monkeypatch)
    out = _read_split(big_file, monkeypatch, progress=Progress())
    assert all(torch.equal(out[k], v) for k, v in load_file(big_file).items())
    # Every chunk needed the disk for its rest, which resumed where the cached part ended.
    assert len(served) > 10 and any(got for _, got in served)
    assert sorted(job.offset for job in calls) == sorted(offset + got for offset, got in served)
    # ... in the batch of small tensors too, in the middle of one of them (1000 = 35 x 28 + 20).
    assert any(len(job.buffers) > 1 and len(job.buffers[0]) == 8 for job in calls)
    header = read_header(big_file)
    assert Progress.total == sum(info.nbytes for info in header.tensors.values())  # each byte once


def test_a_failed_waiting_read_stops_the_load(big_file, monkeypatch):
    import os

    real = os.preadv

    def nothing_cached(fd, buffers, offset, flags=0):
        if flags:
            raise BlockingIOError(11, "would block")
        return real(fd, buffers, offset)

    def broken(job, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "preadv", nothing_cached)
    monkeypatch.setattr(reader, "read_waiting", broken)
    with pytest.raises(OSError, match="Input/output"):
        _read_split(big_file, monkeypatch)


def test_a_file_system_without_nowait_reads_is_read_the_usual_way(big_file, monkeypatch):
    import errno
    import os

    real = os.preadv
    attempts = []

    def no_nowait(fd, buffers, offset, flags=0):
        if flags:
            attempts.append(offset)
            raise OSError(errno.EOPNOTSUPP, "not supported")
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", no_nowait)
    out = _read_split(big_file, monkeypatch, threads=2)
    assert all(torch.equal(out[k], v) for k, v in load_file(big_file).items())
    assert len(attempts) == 1  # asked once; every later read went straight to the waiting threads


def test_a_file_shrunk_under_waiting_reads_is_named(big_file, monkeypatch):
    header = read_header(big_file)
    big_file.write_bytes(big_file.read_bytes()[: header.data_start + 300_000])
    monkeypatch.setattr(reader, "_cpus", lambda: 1)
    monkeypatch.setattr(reader, "CHUNK_BYTES", 64 * 2**10)
    out = _targets(header)
    with pytest.raises(CorruptCheckpointError, match=r"big.safetensors.*ended"):
        read_tensors([TensorRead(header, header.tensors[n], t) for n, t in out.items()], num_threads=4)


def _present(address: int) -> bool:
    """Whether the page at ``address`` is in memory (bit 63 of /proc/self/pagemap)."""
    import mmap
    import struct

    with open("/proc/self/pagemap", "rb") as pagemap:
        pagemap.seek(address // mmap.PAGESIZE * 8)
        return bool(struct.unpack("<Q", pagemap.read(8))[0] >> 63)


def test_prefault_faults_in_the_whole_pages_of_the_view_and_keeps_the_contents():
    import ctypes
    import mmap
    import os
    import sys

    from ckptkit.io.buffers import prefault

    page = mmap.PAGESIZE
    size = 64 * page
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)  # no page present yet
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    region[page + 100 : page + 105] = b"kept!"  # faults in page 1 only
    # A view that starts and ends inside pages: only the pages wholly inside it may be touched.
    view = memoryview(region)[2 * page + 100 : 40 * page + 7]
    populated = prefault(view)
    assert region[page + 100 : page + 105] == b"kept!" and region[3 * page : 3 * page + 4] == b"\0" * 4
    if populated:  # Linux 5.14+: the whole pages of the view, in one call, and nothing else
        assert not _present(base + 2 * page) and not _present(base + 40 * page)
        assert all(_present(base + i * page) for i in range(3, 40))
        assert not any(_present(base + i * page) for i in range(41, 64))
    else:  # only where the kernel cannot (not Linux, or before 5.14)
        release = tuple(int(p) for p in os.uname().release.split(".")[:2])
        assert not sys.platform.startswith("linux") or release < (5, 14)
    del view
    assert prefault(memoryview(bytearray(100))) is False  # too short to bother
    assert prefault(memoryview(bytes(2**20))) is False  # read-only memory is never touched


# -- the waiting reads: sequential streams, each on its own descriptors ----------------------------


def _nothing_cached(monkeypatch):
    """Every RWF_NOWAIT read finds nothing cached (as for a cold file)."""
    import os

    real = os.preadv

    def preadv(fd, buffers, offset, flags=0):
        if flags:
            raise BlockingIOError(11, "would block")
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", preadv)


def _open_fds() -> set[str]:
    import os

    return set(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not __import__("os").path.isdir("/proc/self/fd"), reason="needs /proc (Linux)")
def test_waiting_reads_run_as_ordered_streams_on_their_own_descriptors(big_file, monkeypatch):
    import os
    import threading

    _nothing_cached(monkeypatch)
    identity = (os.stat(big_file).st_dev, os.stat(big_file).st_ino)
    seen = []  # (thread, offset, fd, same file) of every waiting read
    real = reader.read_waiting

    def spy(job, **kwargs):
        st = os.fstat(job.fd)
        seen.append((threading.current_thread().name, job.offset, job.fd, (st.st_dev, st.st_ino) == identity))
        return real(job, **kwargs)

    monkeypatch.setattr(reader, "read_waiting", spy)
    before = _open_fds()
    out = _read_split(big_file, monkeypatch, threads=3)
    assert all(torch.equal(out[k], v) for k, v in load_file(big_file).items())
    assert _open_fds() == before  # every descriptor a stream opened is closed again
    streams = {}
    for name, offset, fd, same in seen:
        assert same and name.startswith("ckptkit-wait-")
        streams.setdefault(name, []).append((offset, fd))
    assert len(streams) == 3
    for reads in streams.values():
        offsets = [offset for offset, _ in reads]
        assert offsets == sorted(offsets)  # each stream reads its run in file order
        assert len({fd for _, fd in reads}) == 1  # through one descriptor of its own
    assert len({reads[0][1] for reads in streams.values()}) == 3
    # The runs are contiguous: every offset of one stream lies before every offset of the next.
    runs = sorted((min(o for o, _ in r), max(o for o, _ in r)) for r in streams.values())
    assert all(a[1] < b[0] for a, b in itertools.pairwise(runs))


@pytest.mark.parametrize(
    ("error", "at"), [(OSError(5, "Input/output error"), 2), (KeyboardInterrupt(), 3)], ids=["io", "ctrl-c"]
)
def test_a_failed_or_interrupted_stream_read_stops_the_load_and_its_streams(big_file, monkeypatch, error, at):
    import threading

    _nothing_cached(monkeypatch)
    real = reader.read_waiting
    calls = []

    def fails(job, **kwargs):
        calls.append(job.offset)
        if len(calls) == at:
            raise error
        return real(job, **kwargs)

    monkeypatch.setattr(reader, "read_waiting", fails)
    before = _open_fds()
    with pytest.raises(type(error)):
        _read_split(big_file, monkeypatch, threads=3)
    assert not [t for t in threading.enumerate() if t.name.startswith("ckptkit-wait")]
    assert _open_fds() == before  # the streams' own descriptors are closed too


def test_every_stream_gets_its_first_job_before_any_gets_a_second(big_file, monkeypatch):
    from ckptkit.io.read_jobs import ReadStreams

    _nothing_cached(monkeypatch)
    handed = []  # the run of every job handed to a stream, in the order the CPU threads hand them on
    real = ReadStreams.submit

    def spy(self, index, job, then):
        handed.append(self._run_of[index])
        return real(self, index, job, then)

    monkeypatch.setattr(ReadStreams, "submit", spy)
    out = _read_split(big_file, monkeypatch, threads=3)
    assert all(torch.equal(out[k], v) for k, v in load_file(big_file).items())
    # The CPU thread prefaults each destination before handing its job on: taken run by run in
    # turn, no stream waits for the destinations of the runs before its own.
    assert min(handed.count(run) for run in range(3)) >= 2  # several jobs each
    assert sorted(handed[:3]) == [0, 1, 2]


def test_stream_order_takes_each_job_once_run_by_run(tmp_path):
    from ckptkit.io.read_jobs import ReadJob, ReadStreams

    jobs = [ReadJob(0, tmp_path / "f", 10 * i, 10) for i in range(7)]
    streams = ReadStreams(jobs, 3, lambda job: None)
    # Runs of about equal bytes in file order: [0, 1, 2], [3, 4], [5, 6]; taken in turn.
    assert streams.order() == [0, 3, 5, 1, 4, 6, 2]
    one = ReadStreams(jobs[:2], 4, lambda job: None)  # more streams than jobs: some runs are empty
    assert sorted(one.order()) == [0, 1]


def _evict(path) -> bool:
    """Drop ``path`` from the page cache; whether the kernel says it is gone (needs cachestat)."""
    import os

    from ckptkit.io import read_jobs

    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return read_jobs._first_page_cached(fd, 0) is False
    finally:
        os.close(fd)


def _spy_nowait(monkeypatch) -> list[int]:
    """The offsets of every RWF_NOWAIT read made from now on (the reads themselves unchanged)."""
    import os

    real = os.preadv
    attempts: list[int] = []

    def spy(fd, buffers, offset, flags=0):
        if flags:
            attempts.append(offset)
        return real(fd, buffers, offset, flags)

    monkeypatch.setattr(os, "preadv", spy)
    return attempts


def test_jobs_not_in_the_page_cache_are_not_attempted_without_waiting(big_file, monkeypatch):

    header = read_header(big_file)
    if not _evict(big_file):
        pytest.skip("the kernel cannot say what the page cache holds (cachestat, Linux 6.5)")
    attempts = _spy_nowait(monkeypatch)
    monkeypatch.setattr(reader, "_cpus", lambda: 1)
    monkeypatch.setattr(reader, "CHUNK_BYTES", 64 * 2**10)
    out = _targets(header)  # the header was read before the file left the page cache
    read_tensors([TensorRead(header, header.tensors[n], t) for n, t in out.items()], num_threads=4)
    assert all(torch.equal(out[k], v) for k, v in load_file(big_file).items())
    # The first chunk was not in the page cache when the CPU thread came to it: it was handed to
    # its stream without an RWF_NOWAIT read (which would have started readahead there). Later
    # chunks may already be cached by the streams' own readahead, and then are attempted.
    assert header.data_start not in attempts


def test_a_kernel_without_cachestat_attempts_every_job(big_file, monkeypatch):

    from ckptkit.io import read_jobs

    asked = []

    def refused(*args):
        asked.append(args[0])
        return -1

    monkeypatch.setattr(read_jobs, "_cachestat", refused)
    attempts = _spy_nowait(monkeypatch)
    big_file.read_bytes()
    out = _read_split(big_file, monkeypatch)
    assert all(torch.equal(out[k], v) for k, v in load_file(big_file).items())
    assert asked == [read_jobs._CACHESTAT]  # refused once, then not asked again
    assert len(attempts) > 10


def test_a_cancelled_finish_waits_but_never_raises(tmp_path):
    import os
    import threading

    from ckptkit.io.read_jobs import ReadJob, ReadStreams

    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    fd = os.open(path, os.O_RDONLY)
    started, release = threading.Event(), threading.Event()
    done = []

    def read(job):
        if job.offset == 0:
            started.set()
            release.wait(5)
            raise OSError(5, "Input/output error")
        done.append(job.offset)

    try:
        jobs = [ReadJob(fd, path, offset, 10, buffers=[memoryview(bytearray(10))]) for offset in (0, 10, 20)]
        streams = ReadStreams(jobs, 1, read)
        for index, job in enumerate(jobs):
            streams.submit(index, job, lambda: None)
        started.wait(5)
        release.set()
        streams.finish(cancel=True)  # the caller's own exception stands: nothing raised here
        assert done == []  # reads not started when the load was cancelled are dropped
        streams.finish(cancel=True)  # again, as after a finish() that was itself interrupted
        with pytest.raises(RuntimeError, match="after finish"):
            streams.submit(0, jobs[0], lambda: None)
    finally:
        os.close(fd)


def test_without_proc_the_streams_read_through_the_shared_descriptors(big_file, monkeypatch):
    from ckptkit.io import read_jobs

    _nothing_cached(monkeypatch)
    monkeypatch.setattr(read_jobs, "held_path", lambda fd, path: str(path))  # no /proc/self/fd
    reopened = []
    real = read_jobs.os.open
    monkeypatch.setattr(read_jobs.os, "open", lambda *a, **k: reopened.append(a[0]) or real(*a, **k))
    out = _read_split(big_file, monkeypatch, threads=3)
    assert all(torch.equal(out[k], v) for k, v in load_file(big_file).items())
    assert not [name for name in reopened if "/proc/" in str(name)]
