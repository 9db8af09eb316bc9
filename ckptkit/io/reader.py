"""Reading many safetensors tensors at once, in parallel, straight into their destinations.

Each destination is a tensor the caller allocated (fresh private memory, a parameter's own
storage, or memory on another device). A CPU destination of the stored dtype is filled by
``os.preadv`` directly — no intermediate copy; consecutive small tensors share one ``preadv``
call (one iovec each), large ones are split into chunks so several threads read them at once
(``preadv`` releases the GIL). Each chunk's destination is prefaulted in one call
(:func:`~ckptkit.io.buffers.prefault`); when every tensor lands as stored, each chunk is read with
``RWF_NOWAIT`` on one thread per CPU (:class:`~ckptkit.io.read_jobs.CachedReads`): what the
page cache holds is copied at once, and the rest of a read that would wait for the disk goes to
``num_threads`` sequential streams (:class:`~ckptkit.io.read_jobs.ReadStreams`: contiguous runs
of the chunks, each read in order through its own descriptors), so that a cold read keeps many
requests in flight while a hot one does not oversubscribe the CPUs. A CPU destination of another
dtype is cast straight from a copy-on-write map of its file when the caller passes :class:`FileMaps`
(on the calling thread while the pool reads the rest, torch splitting each chunk over its intra-op
threads; by the pool when torch has one such thread; each byte of the file read once, as
``from_pretrained`` casts from its map), else through a small per-thread staging buffer; either way
a cast never allocates a second copy of a tensor. A CUDA destination is filled through two pinned
staging buffers per thread (:class:`StagingPipeline`): while one chunk is copied to the GPU (on the
thread's own stream, cast there when the dtype changes), the next is read into the other buffer.

:class:`FileMaps` (:mod:`ckptkit.io.file_maps`) is the zero-copy alternative for a CPU tensor in
its stored dtype: each tensor a copy-on-write view of its file.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ckptkit.errors import CkptError
from ckptkit.format.safe_files import open_regular
from ckptkit.io.buffers import prefault, raw_bytes
from ckptkit.io.file_maps import FileMaps
from ckptkit.io.read_jobs import NOWAIT, CachedReads, ReadJob, ReadStreams, TensorRead, read_waiting
from ckptkit.io.tensors import read_into, to_torch_dtype

__all__ = ["CHUNK_BYTES", "FileMaps", "StagingPipeline", "TensorRead", "default_num_threads", "read_tensors"]

#: Bytes one job reads: large enough to amortise a syscall, small enough to spread over threads.
CHUNK_BYTES = 16 * 2**20
#: iovecs per preadv call (Linux IOV_MAX is 1024).
MAX_IOVECS = 512


def default_num_threads() -> int:
    """Reader threads when the caller does not say: the CPUs this process may use, 8 to 16.

    At least 8 even on a 2-core machine: a cold read waits on the disk, not the CPU (``preadv``
    releases the GIL), and more reads in flight keep the device's queue full — on a 2-core VM,
    8 sequential streams read a cold 785 MiB checkpoint about as fast as 12 and faster than 4 or
    16. Reads the page cache can serve at once run on one thread per CPU instead
    (:func:`read_tensors`): they are copies bound by the CPUs and the destination's page faults.
    """
    return max(8, min(16, _cpus()))


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 2


def _staging_threads() -> int:
    """Reader threads when some tensors go through staging (a cast, another device): each thread
    holds its own 16 MiB buffer (two pinned ones for CUDA), so as many as the CPUs, 2 to 8."""
    return max(2, min(8, _cpus()))


def read_tensors(
    reads: Sequence[TensorRead],
    *,
    num_threads: int | None = None,
    progress: object | None = None,
    maps: FileMaps | None = None,
) -> None:
    """Fill every ``target`` from its file.

    Args:
        reads: the tensors to read; targets must not overlap.
        num_threads: parallel readers (default :func:`default_num_threads`).
        progress: an object with ``update(nbytes)`` (a tqdm bar), called as bytes arrive.
        maps: cast CPU targets of another dtype straight from these copy-on-write maps of the files
            (no staging copy: each byte is read once). ``None``: every byte is read with ``preadv``
            and nothing is mapped. A file truncated in place while a mapped cast reads it faults
            (``SIGBUS``) instead of raising, as a zero-copy view would (docs/load.md).

    Raises:
        CorruptCheckpointError: a file ended early (truncated after its header was checked).
        CkptError: a target's size does not match the stored tensor.
        ValueError: a target is not contiguous.

    Example:
        >>> header = read_header("model.safetensors")  # doctest: +SKIP
        >>> out = {n: torch.empty(i.shape, dtype=to_torch_dtype(i.dtype)) for n, i in header.tensors.items()}  # doctest: +SKIP
        >>> read_tensors([TensorRead(header, header.tensors[n], t) for n, t in out.items()])  # doctest: +SKIP
    """
    for item in reads:
        _check_target(item)
    lock = threading.Lock()
    local = threading.local()
    pipelines: list[StagingPipeline] = []
    # A read the page cache can serve is a copy bound by the CPUs: one thread per CPU does it best.
    # Reads that would wait for the disk are handed to ``threads`` streams, so that many are in
    # flight at once (the default 8 fill a disk's queue even on 2 CPUs), each sequential.
    cpus = _cpus()
    cached = CachedReads()
    waiting: ReadStreams | None = None

    def done(job: ReadJob) -> None:
        if progress is not None:
            with lock:
                progress.update(job.nbytes)  # type: ignore[attr-defined]

    def run(index: int, job: ReadJob) -> None:
        if job.buffers is not None:
            if waiting is None:
                read_waiting(job)
            else:
                remaining = cached.read(job)
                if remaining is not None:  # the rest waits for the disk, on its stream
                    waiting.submit(index, remaining, functools.partial(done, job))
                    return
        elif job.source is not None:
            _cast_mapped(job)
        elif job.read is not None and job.read.target.device.type == "cuda":
            pipeline = getattr(local, "pipeline", None)
            if pipeline is None:
                pipeline = local.pipeline = _cuda_pipeline(job.read.target.device)
                with lock:
                    pipelines.append(pipeline)
            pipeline.run(job)
        else:
            _read_staged(job, local)
        done(job)

    with _open_files(reads) as fds:
        try:
            planned = list(_plan(reads, fds, maps))
            # Casts from the maps run on this thread while the pool reads the rest: torch splits each
            # copy over its intra-op threads, which also fault in the destination. With one such
            # thread (torchrun sets OMP_NUM_THREADS=1) they stay in the pool, several at once.
            here = torch.get_num_threads() > 1
            casts = [job for job in planned if job.source is not None] if here else []
            jobs = [job for job in planned if job.source is None] if casts else planned
            if num_threads:
                threads = num_threads
            elif any(job.buffers is None for job in jobs):
                threads = _staging_threads()  # each thread holds its staging buffers: keep them few
            else:
                threads = default_num_threads()  # the pool only reads as stored
            if threads <= 1 or len(jobs) <= 1:
                for index, job in enumerate(jobs):
                    run(index, job)
                _cast_all(casts, done)
                return
            workers = threads
            # Only when every job is such a read: casts and device copies keep all their threads.
            if threads > cpus and NOWAIT is not None and all(job.buffers is not None for job in jobs):
                workers = max(cpus, 1)
                waiting = ReadStreams(jobs, threads, lambda job: read_waiting(job, prefaulted=True))
            order = range(len(jobs)) if waiting is None else waiting.order()
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ckptkit-read") as pool:
                futures = [pool.submit(run, index, jobs[index]) for index in order]
                try:
                    _cast_all(casts, done)
                    for future in futures:
                        future.result()
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
            if waiting is not None:
                waiting.finish()  # complete: every waiting read has run
                waiting = None
        finally:
            if waiting is not None:  # the load failed or was interrupted: stop the streams
                waiting.finish(cancel=True)
            # Device copies still in flight read from the staging buffers: wait for them all.
            for pipeline in pipelines:
                pipeline.finish()


def _check_target(item: TensorRead) -> None:
    info, target = item.info, item.target
    stored = to_torch_dtype(info.dtype)
    if stored.itemsize * info.numel != info.nbytes:
        raise CkptError(
            f"tensor {info.name!r} has dtype {info.dtype}, which packs several values per byte; "
            "ckptkit cannot read it into a torch tensor",
            path=item.header.path,
        )
    if not target.is_contiguous():
        raise ValueError(f"destination of {info.name!r} must be contiguous")
    if target.numel() != info.numel:
        raise CkptError(
            f"tensor {info.name!r} has {info.numel} elements but its destination has {target.numel()}",
            path=item.header.path,
        )


@contextmanager
def _open_files(reads: Sequence[TensorRead]) -> Iterator[dict[Path, int]]:
    fds: dict[Path, int] = {}
    try:
        for item in reads:
            path = item.header.path
            if path not in fds:
                fd = open_regular(path, identity=item.header.identity)
                fds[path] = fd
                if hasattr(os, "posix_fadvise"):
                    # Sequential readahead for cold files; harmless when the pages are cached.
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def _plan(
    reads: Sequence[TensorRead], fds: dict[Path, int], maps: FileMaps | None = None
) -> Iterator[ReadJob]:
    ordered = sorted(reads, key=lambda r: (str(r.header.path), r.info.begin))
    batch: ReadJob | None = None
    for item in ordered:
        path, info = item.header.path, item.info
        offset = item.header.data_start + info.begin
        if not info.nbytes:
            continue
        if item.direct and info.nbytes < CHUNK_BYTES:
            view = raw_bytes(item.target)
            if (
                batch is not None
                and batch.path == path
                and batch.offset + batch.nbytes == offset
                and batch.nbytes + info.nbytes <= CHUNK_BYTES
                and len(batch.buffers or ()) < MAX_IOVECS
            ):
                batch.buffers.append(view)  # type: ignore[union-attr]
                batch.nbytes += info.nbytes
                continue
            if batch is not None:
                yield batch
            batch = ReadJob(fds[path], path, offset, info.nbytes, buffers=[view])
            continue
        if batch is not None:
            yield batch
            batch = None
        if item.direct:
            view = raw_bytes(item.target)
            for start in range(0, info.nbytes, CHUNK_BYTES):
                part = view[start : start + CHUNK_BYTES]
                yield ReadJob(fds[path], path, offset + start, len(part), buffers=[part])
        else:
            size = to_torch_dtype(info.dtype).itemsize
            per_chunk = max(1, CHUNK_BYTES // size)
            source = _mapped(item, maps)
            for first in range(0, info.numel, per_chunk):
                count = min(per_chunk, info.numel - first)
                yield ReadJob(
                    fds[path],
                    path,
                    offset + first * size,
                    count * size,
                    read=item,
                    first=first,
                    count=count,
                    source=None if source is None else source[first : first + count],
                )
    if batch is not None:
        yield batch


def _mapped(item: TensorRead, maps: FileMaps | None) -> torch.Tensor | None:
    """The stored elements of ``item`` as a flat view of its file's map, for a CPU cast; else ``None``."""
    if maps is None or item.target.device.type != "cpu":
        return None
    view = maps.tensor(item.header, item.info)  # None when misaligned: staged then
    return None if view is None else view.view(-1)


def _cast_all(jobs: Sequence[ReadJob], done: Callable[[ReadJob], None]) -> None:
    """Cast each job's elements of its file's map into its target, on the calling thread.

    ``copy_`` splits a large chunk over torch's intra-op threads (``torch.set_num_threads``), and
    those threads fault in the fresh destination as they write it: on the project's 2-core VM a
    335 MB float32 VAE cast to bfloat16 this way took 0.080 s, against 0.090 s with two reader
    threads each prefaulting and casting its own chunks (fresh processes, medians of 8).
    """
    for job in jobs:
        _cast_mapped(job)
        done(job)


def _cast_mapped(job: ReadJob) -> None:
    item = job.read
    assert item is not None and job.source is not None
    # The cast reads the file's pages straight from the map (page cache, or faulted in with
    # readahead when cold) and writes the destination once: no staging copy.
    item.target.view(-1)[job.first : job.first + job.count].copy_(job.source)


def _staging(local: threading.local, nbytes: int, device: torch.device) -> torch.Tensor:
    pin = device.type == "cuda" and torch.cuda.is_available()
    key = "pinned" if pin else "plain"
    buffer = getattr(local, key, None)
    if buffer is None or buffer.numel() < nbytes:
        buffer = torch.empty(max(nbytes, CHUNK_BYTES), dtype=torch.uint8, pin_memory=pin)
        setattr(local, key, buffer)
    return buffer


def _read_staged(job: ReadJob, local: threading.local) -> None:
    item = job.read
    assert item is not None
    target = item.target
    stage = _staging(local, job.nbytes, target.device)[: job.nbytes]
    read_into(job.fd, job.offset, raw_bytes(stage), job.path)
    values = stage.view(to_torch_dtype(item.info.dtype))
    part = target.view(-1)[job.first : job.first + job.count]
    if part.device.type == "cpu":
        prefault(raw_bytes(part))
    # Synchronous copy (with the cast): the staging buffer is reused by this thread's next job.
    part.copy_(values)


class StagingPipeline:
    """Double-buffered staging: a chunk's copy to the device overlaps the read of the next chunk.

    Each reader thread owns one. :meth:`run` reads a job's bytes into one of two staging buffers
    and starts ``copy(stage, job)``, which returns a handle whose ``synchronize()`` waits until the
    copy has finished reading ``stage`` (a CUDA event); the buffer is reused only after that.
    :meth:`finish` waits for what is still in flight.

    Args:
        make_buffer: ``nbytes -> uint8 CPU tensor`` (pinned for CUDA).
        copy: starts the copy of a filled staging buffer into ``job.read.target``.
    """

    def __init__(
        self,
        make_buffer: Callable[[int], torch.Tensor],
        copy: Callable[[torch.Tensor, ReadJob], Any],
    ) -> None:
        self._make_buffer = make_buffer
        self._copy = copy
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._pending: list[Any] = [None, None]
        self._turn = 0

    def run(self, job: ReadJob) -> None:
        slot = self._turn
        self._turn ^= 1
        self._wait(slot)
        buffer = self._buffers[slot]
        if buffer is None or buffer.numel() < job.nbytes:
            buffer = self._buffers[slot] = self._make_buffer(max(job.nbytes, CHUNK_BYTES))
        stage = buffer[: job.nbytes]
        read_into(job.fd, job.offset, raw_bytes(stage), job.path)
        self._pending[slot] = self._copy(stage, job)

    def finish(self) -> None:
        for slot in (0, 1):
            self._wait(slot)

    def _wait(self, slot: int) -> None:
        handle = self._pending[slot]
        self._pending[slot] = None
        if handle is not None:
            handle.synchronize()


def _cuda_pipeline(device: torch.device) -> StagingPipeline:
    """A :class:`StagingPipeline` into ``device``: pinned buffers, this thread's own stream."""
    stream = torch.cuda.Stream(device=device)
    # Targets were allocated on the current stream: order the copies after that.
    stream.wait_stream(torch.cuda.current_stream(device))
    on_device: list[torch.Tensor] = []  # raw bytes before a cast; one suffices, the stream orders its uses

    def make_buffer(nbytes: int) -> torch.Tensor:
        return torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)

    def copy(stage: torch.Tensor, job: ReadJob) -> Any:
        item = job.read
        assert item is not None
        stored = to_torch_dtype(item.info.dtype)
        with torch.cuda.stream(stream):
            part = item.target.view(-1)[job.first : job.first + job.count]
            if part.dtype == stored:
                part.view(torch.uint8).copy_(stage, non_blocking=True)
            else:
                if not on_device or on_device[0].numel() < stage.numel():
                    on_device[:] = [
                        torch.empty(max(stage.numel(), CHUNK_BYTES), dtype=torch.uint8, device=device)
                    ]
                raw = on_device[0][: stage.numel()]
                raw.copy_(stage, non_blocking=True)
                part.copy_(raw.view(stored))  # the cast runs on the GPU
            event = torch.cuda.Event()
            event.record(stream)
        return event

    return StagingPipeline(make_buffer, copy)
