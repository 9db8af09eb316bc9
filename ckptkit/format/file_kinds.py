"""What a file that is not a checkpoint is: an archive, a config, anything else — told from its
name and first bytes, so ``inspect``/``verify`` of ``model.tar.gz`` say what it is and how to
extract it. Torch-free.
"""

from __future__ import annotations

import os
from pathlib import Path

from ckptkit.errors import CheckpointNotFoundError, IncompleteCheckpointError
from ckptkit.format.naming import parse_index_filename, parse_weight_filename
from ckptkit.format.safe_files import open_regular_file

__all__ = ["DCP_METADATA_NAME", "is_dcp_directory", "refuse_non_checkpoint"]

#: The file ``torch.distributed.checkpoint`` writes beside its ``*.distcp`` files.
DCP_METADATA_NAME = ".metadata"

_MAGIC = (
    (b"\x1f\x8b", "a gzip file (a tarball such as model.tar.gz?)", "extract it first (tar -xzf FILE -C DIR)"),
    (b"PK\x03\x04", "a zip archive", "extract it first (unzip FILE -d DIR)"),
    (b"BZh", "a bzip2 file", "extract it first (tar -xjf FILE -C DIR)"),
    (b"\xfd7zXZ", "an xz file", "extract it first (tar -xJf FILE -C DIR)"),
    (b"(\xb5/\xfd", "a zstd file", "extract it first (tar --zstd -xf FILE -C DIR)"),
)


def refuse_non_checkpoint(path: str | os.PathLike[str]) -> None:
    """Raise for a file that is neither a weights file nor an index, saying what it is.

    Raises:
        CheckpointNotFoundError: an archive (``model.tar.gz``), a JSON config or any other file;
            the fix says how to extract an archive.
        UnsafeCheckpointError: a FIFO, device or socket (never read, so never blocked on).

    Example:
        >>> refuse_non_checkpoint("model.tar.gz")  # doctest: +SKIP
        Traceback (most recent call last):
        CheckpointNotFoundError: model.tar.gz: is a gzip file (a tarball such as model.tar.gz?); ...
    """
    path = Path(path)
    if parse_weight_filename(path.name) is not None or parse_index_filename(path.name) is not None:
        return
    try:
        with open_regular_file(path) as handle:
            head = handle.read(512)
    except IncompleteCheckpointError:
        return  # missing or a dangling link: reported as such by the directory listing
    what, fix = "not a weights file or an index", "pass the checkpoint directory or one of its weights files"
    for magic, kind, extract in _MAGIC:
        if head.startswith(magic):
            what, fix = kind, extract
    if head[257:262] == b"ustar":
        what, fix = "a tar archive", "extract it first (tar -xf FILE -C DIR)"
    elif path.name.endswith(".json"):
        what = "a JSON file (a config?), not a weights file or an index"
    raise CheckpointNotFoundError(
        f"is {what}; it holds no checkpoint to inspect",
        path=path,
        fix=fix.replace("FILE", str(path)),
    )


def is_dcp_directory(path: str | os.PathLike[str]) -> bool:
    """A directory ``torch.distributed.checkpoint`` wrote: it holds a ``.metadata`` file.

    Example:
        >>> is_dcp_directory("step-1000/")  # doctest: +SKIP
        True
    """
    return (Path(path) / DCP_METADATA_NAME).is_file()
