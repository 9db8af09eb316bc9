"""Streaming file hashes (sha256 and git blob sha1) and ``SHA256SUMS`` manifests.

Files are read in large chunks and hashed in a small thread pool: :mod:`hashlib` releases the GIL
while it hashes a buffer, so several files hash in parallel at disk speed. Torch-free.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ckptkit.errors import CkptError, CorruptCheckpointError
from ckptkit.format.safe_files import (
    confinement,
    confinement_root,
    open_regular_file,
    quote_content,
    read_text_capped,
)
from ckptkit.io.atomic import staged_file
from ckptkit.io.progress import progress_enabled

__all__ = [
    "CHUNK_SIZE",
    "MANIFEST_NAME",
    "ZIP_CRC",
    "ProgressCallback",
    "hash_file",
    "hash_files",
    "list_content_files",
    "read_manifest",
    "write_manifest",
    "zip_crc_failures",
]

logger = logging.getLogger("ckptkit")

#: Name of the manifest file, in ``sha256sum`` format.
MANIFEST_NAME = "SHA256SUMS"
#: Bytes read per call; large enough that hashing, not the Python loop, sets the pace.
CHUNK_SIZE = 4 * 2**20
#: A manifest line is ~70 bytes: 64 MiB lists about a million files.
MAX_MANIFEST_SIZE = 64 * 2**20
#: Folders of download bookkeeping that are never part of a checkpoint's content.
SKIPPED_DIRS = frozenset({".cache", ".git", ".huggingface"})

ProgressCallback = Callable[[int], None]
#: The pseudo-algorithm of :func:`hash_files` that checks zip members against their CRC-32.
ZIP_CRC = "zip-crc32"


def hash_file(
    path: str | os.PathLike[str],
    algorithms: Iterable[str] = ("sha256",),
    *,
    on_bytes: ProgressCallback | None = None,
) -> dict[str, str]:
    """Hash one file in a single streaming pass.

    Args:
        path: the file (links are followed).
        algorithms: any of ``"sha256"`` and ``"git-sha1"`` (git's blob id: sha1 of
            ``b"blob <size>\\0"`` followed by the data).
        on_bytes: called with the number of bytes after each chunk (for progress bars).

    Returns:
        algorithm -> lower-case hex digest.

    Raises:
        CkptError: the file is not a regular file or cannot be opened (see
            :func:`ckptkit.format.safe_files.open_regular`).
        OSError: reading it failed midway.

    Example:
        >>> hash_file("model.safetensors")["sha256"]  # doctest: +SKIP
        '5d41402abc4b2a76b9719d911017c592...'
    """
    wanted = sorted(set(algorithms))
    unknown = set(wanted) - {"sha256", "git-sha1"}
    if unknown:
        raise ValueError(f"unknown hash algorithms {sorted(unknown)}; use 'sha256' or 'git-sha1'")
    with open_regular_file(path) as handle:
        size = os.fstat(handle.fileno()).st_size
        hashers = {}
        for name in wanted:
            if name == "sha256":
                hashers[name] = hashlib.sha256()
            else:
                hashers[name] = hashlib.sha1(f"blob {size}\0".encode(), usedforsecurity=False)
        buffer = bytearray(CHUNK_SIZE)
        view = memoryview(buffer)
        while True:
            count = handle.readinto(buffer)
            if not count:
                break
            for hasher in hashers.values():
                hasher.update(view[:count])
            if on_bytes is not None:
                on_bytes(count)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def hash_files(
    jobs: dict[Path, set[str]],
    *,
    progress: bool | None = None,
    max_workers: int | None = None,
    description: str = "hashing",
) -> dict[Path, dict[str, str] | OSError | CkptError]:
    """Hash many files in a thread pool, with one progress bar over all their bytes.

    Args:
        jobs: file -> the algorithms it needs: ``"sha256"``, ``"git-sha1"``, and ``"zip-crc32"``
            (check a zip file's members against their CRC-32s; its result is ``"ok"``,
            ``"unrecorded"`` when the file is no zip or holds no CRCs, or the failing member names).
        progress: show a tqdm bar on stderr; ``None`` shows it unless
            ``HF_HUB_DISABLE_PROGRESS_BARS`` is set.
        max_workers: threads (default ``min(4, cpu count)``).
        description: the bar's label.

    Returns:
        file -> algorithm -> hex digest, or the error (``OSError`` or a typed
        :class:`~ckptkit.errors.CkptError`: a FIFO, a dangling link) that stopped reading that file.
    """
    if not jobs:
        return {}
    total = 0
    for path in jobs:
        try:
            total += os.stat(path).st_size
        except OSError:
            pass
    show = progress_enabled(progress)
    lock = threading.Lock()
    bar = None
    if show:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=description, leave=False)

    def advance(count: int) -> None:
        if bar is not None:
            with lock:
                bar.update(count)

    root = confinement_root()  # worker threads do not inherit the caller's confinement

    def run(path: Path) -> dict[str, str] | OSError | CkptError:
        wanted = set(jobs[path])
        try:
            with confinement(root):
                result = hash_file(path, wanted - {ZIP_CRC}, on_bytes=advance) if wanted - {ZIP_CRC} else {}
                if ZIP_CRC in wanted:
                    failures = zip_crc_failures(path, on_bytes=None if len(wanted) > 1 else advance)
                    result[ZIP_CRC] = "unrecorded" if failures is None else ", ".join(failures) or "ok"
            return result
        except (OSError, CkptError) as exc:
            return exc

    workers = max_workers or min(4, os.cpu_count() or 1)
    try:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ckptkit-hash") as pool:
            results = dict(zip(jobs, pool.map(run, list(jobs)), strict=True))
    finally:
        if bar is not None:
            bar.close()
    logger.debug("hashed %d files, %d bytes", len(jobs), total)
    return results


def zip_crc_failures(
    path: str | os.PathLike[str], *, on_bytes: ProgressCallback | None = None
) -> list[str] | None:
    """Check every member of a zip file (torch's ``.bin/.pt`` format) against its stored CRC-32.

    Args:
        path: the file.
        on_bytes: called with bytes read, for progress bars.

    Returns:
        The names of members whose data fail their CRC (empty: all good), or ``None`` when the
        file is no zip or recorded no CRCs (``torch.serialization.set_crc32_options(False)``).

    Example:
        >>> zip_crc_failures("pytorch_model.bin")  # doctest: +SKIP
        []
    """
    handle = open_regular_file(path)
    try:
        archive = zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, OSError):
        handle.close()
        return None
    with handle, archive:
        members = [info for info in archive.infolist() if info.file_size and not info.is_dir()]
        if not members or all(info.CRC == 0 for info in members):
            return None
        failed = []
        for info in members:
            try:
                with archive.open(info) as member:  # ZipExtFile checks the CRC at the end of the data
                    while chunk := member.read(CHUNK_SIZE):
                        if on_bytes is not None:
                            on_bytes(len(chunk))
            except (zipfile.BadZipFile, EOFError):
                failed.append(info.filename)
        return failed


def read_manifest(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read a ``sha256sum``-format manifest: relative path -> sha256.

    Accepts the text (``<hex>  name``) and binary (``<hex> *name``) forms and ``sha256sum``'s
    escaping of names that hold a backslash or a newline.

    Raises:
        CorruptCheckpointError: a line is not ``<64 hex digits> name``, or a name escapes the directory.

    Example:
        >>> read_manifest("ckpt/SHA256SUMS")  # doctest: +SKIP
        {'config.json': '3c9a...', 'model.safetensors': '5d41...'}
    """
    path = Path(path)
    entries: dict[str, str] = {}
    text = read_text_capped(path, MAX_MANIFEST_SIZE, what="manifest")
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        escaped = raw.startswith("\\")
        line = raw[1:] if escaped else raw
        digest, sep, name = line.partition(" ")
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdefABCDEF" for c in digest) or not name:
            raise CorruptCheckpointError(
                f"line {number} ({len(raw)} characters) is not '<sha256>  <file>'",
                path=path,
                fix="rewrite it with `ckptkit verify DIR --write-manifest` or `sha256sum`",
            )
        name = name[1:] if name[:1] in {" ", "*"} else name
        if escaped:
            name = name.replace("\\n", "\n").replace("\\\\", "\\")
        if os.path.isabs(name) or ".." in Path(name).parts:
            raise CorruptCheckpointError(
                f"line {number} names a file outside the directory: {quote_content(name)}",
                path=path,
                fix="a manifest lists files relative to its own directory",
            )
        entries[Path(name).as_posix()] = digest.lower()
    return entries


def list_content_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Every file under ``directory`` that belongs to the checkpoint, sorted.

    Links are listed as the files they are (not resolved); download bookkeeping (``.cache``,
    ``.huggingface``, ``.git``), the manifest itself and ``*.incomplete`` files are left out.
    """
    directory = Path(directory)
    found = []
    for current, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIPPED_DIRS)
        for filename in filenames:
            if filename == MANIFEST_NAME or filename.endswith(".incomplete"):
                continue
            found.append(Path(current) / filename)
    return sorted(found)


def write_manifest(
    directory: str | os.PathLike[str],
    *,
    digests: dict[Path, str] | None = None,
    progress: bool | None = None,
) -> Path:
    """Write ``SHA256SUMS`` (``sha256sum`` format) for every file under ``directory``.

    The file is published through :func:`ckptkit.io.atomic.staged_file` (written aside, synced,
    renamed into place), so a reader never sees half a manifest. Check it later with :func:`ckptkit.verify_checkpoint` or ``sha256sum -c SHA256SUMS``.

    Args:
        directory: the checkpoint directory.
        digests: sha256 already known for some files (absolute or as listed), to skip hashing them.
        progress: show a progress bar (default: unless ``HF_HUB_DISABLE_PROGRESS_BARS`` is set).

    Returns:
        The manifest's path.

    Raises:
        DiskFullError: no room for the manifest (any old one is intact).
        OSError: a file cannot be read (a dangling link) or the manifest cannot be written.

    Example:
        >>> write_manifest("./pixart")  # doctest: +SKIP
        PosixPath('pixart/SHA256SUMS')
    """
    directory = Path(directory)
    files = list_content_files(directory)
    known = dict(digests or {})
    todo = {path: {"sha256"} for path in files if path not in known}
    for path, result in hash_files(todo, progress=progress, description="SHA256SUMS").items():
        if isinstance(result, Exception):
            raise result
        known[path] = result["sha256"]
    lines = []
    for path in files:
        name = path.relative_to(directory).as_posix()
        if "\\" in name or "\n" in name:
            lines.append(
                f"\\{known[path]}  {name.replace(chr(92), chr(92) * 2).replace(chr(10), chr(92) + 'n')}"
            )
        else:
            lines.append(f"{known[path]}  {name}")
    target = directory / MANIFEST_NAME
    with staged_file(target, overwrite=True) as staging:
        staging.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    logger.info("wrote %s (%d files)", target, len(lines))
    return target
