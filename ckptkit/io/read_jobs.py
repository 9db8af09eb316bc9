"""What the reader reads: the tensors asked for, the jobs they are cut into, and the plain reads.

A :class:`TensorRead` is one tensor and its destination; the reader cuts the reads into
:class:`ReadJob` s (a run of small tensors, or one chunk of a large one). A job whose bytes land as
they are is read by :class:`CachedReads` (what the page cache holds, without waiting) and
:func:`read_waiting` (the rest, waiting for the disk).
"""

from __future__ import annotations

import dataclasses
import errno
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ckptkit.format.safetensors_header import SafetensorsHeader, TensorInfo
from ckptkit.io.buffers import prefault
from ckptkit.io.tensors import read_into, to_torch_dtype

__all__ = ["NOWAIT", "CachedReads", "ReadJob", "TensorRead", "read_waiting"]


@dataclass
class TensorRead:
    """One tensor to read.

    Attributes:
        header: the parsed header of the file that holds it.
        info: its entry in that header.
        target: where it goes: contiguous, same number of elements, any dtype, any device.
    """

    header: SafetensorsHeader
    info: TensorInfo
    target: torch.Tensor

    @property
    def direct(self) -> bool:
        """Whether the bytes can land in ``target`` as they are (CPU memory of the stored dtype)."""
        t = self.target
        return t.device.type == "cpu" and t.dtype == to_torch_dtype(self.info.dtype)


@dataclass
class ReadJob:
    fd: int
    path: Path
    offset: int
    nbytes: int
    # direct: bytes go to these buffers in order; staged: bytes go to target[first:first+count]
    buffers: list[memoryview] | None = None
    read: TensorRead | None = None
    first: int = 0
    count: int = 0
    # mapped cast: these elements of the file's map are cast into target[first:first+count]
    source: torch.Tensor | None = None


#: ``preadv2`` flag: return at once with what the page cache holds instead of waiting for the disk.
NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)


class CachedReads:
    """Reads of direct jobs from the page cache, without waiting for the disk (``RWF_NOWAIT``).

    One per :func:`~ckptkit.io.reader.read_tensors` call: once the file system has said it cannot
    (``EOPNOTSUPP``, ``EINVAL``, ``ENOSYS``), later jobs skip the attempt and wait as usual.
    """

    def __init__(self) -> None:
        self._flag = NOWAIT  # None once the file system (or the kernel) has said it cannot

    def read(self, job: ReadJob) -> ReadJob | None:
        """Read what the page cache holds of ``job``; the rest, if any, as a job (already prefaulted).

        The destination is prefaulted first (:func:`~ckptkit.io.buffers.prefault`), on this thread,
        while other threads may be waiting for the disk.
        """
        buffers = job.buffers or []
        for buffer in buffers:
            prefault(buffer)
        if self._flag is None:
            return job
        try:
            got = os.preadv(job.fd, buffers, job.offset, self._flag)
        except BlockingIOError:  # the first page is not cached
            return job
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
            self._flag = None  # a file system (or kernel) that cannot say: read the usual way
            return job
        if got >= job.nbytes:
            return None
        return dataclasses.replace(
            job, offset=job.offset + got, nbytes=job.nbytes - got, buffers=_after(buffers, got)
        )


def read_waiting(job: ReadJob, *, prefaulted: bool = False) -> None:
    """Read a direct job, waiting for the disk if need be (its destination prefaulted unless it was)."""
    buffers = job.buffers or []
    if not prefaulted:
        for buffer in buffers:
            prefault(buffer)
    got = os.preadv(job.fd, buffers, job.offset)
    if got == job.nbytes:
        return
    # A short read: finish buffer by buffer, which also names a truncated file.
    offset = job.offset
    for buffer in buffers:
        done = min(max(got, 0), len(buffer))
        got -= done
        if done < len(buffer):
            read_into(job.fd, offset + done, buffer[done:], job.path)
        offset += len(buffer)


def _after(buffers: list[memoryview], skip: int) -> list[memoryview]:
    """``buffers`` without their first ``skip`` bytes."""
    out = []
    for buffer in buffers:
        if skip >= len(buffer):
            skip -= len(buffer)
            continue
        out.append(buffer[skip:] if skip else buffer)
        skip = 0
    return out
