"""``materialize``: a link-free copy of a checkpoint or hub snapshot, or a tarball of one.

Hub snapshots are directories of relative symlinks into ``blobs/``; copying them with ``cp -r``,
zipping or tarring them keeps the links, which break once moved (the SageMaker ``model.tar.gz``
problem). ``materialize`` follows every link and copies the bytes, streaming, and leaves out the
download bookkeeping (``.cache/``, ``.huggingface/``, ``.git/``).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tarfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ckptkit.errors import CheckpointNotFoundError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.confine import checkpoint_root, confine_enabled, enforce_confinement
from ckptkit.format.hub_files import dangling_link_fix, read_ref
from ckptkit.format.layout import IGNORED_DIRS
from ckptkit.format.safe_files import confinement, open_regular_file
from ckptkit.io.atomic import (
    copy_file,
    staged_directory,
    staged_file,
    walk_files,
)
from ckptkit.io.checksums import MANIFEST_NAME, write_manifest
from ckptkit.io.progress import progress_enabled
from ckptkit.resolve.resolve import resolve_ckpt_dir
from ckptkit.save.shipping import known_sha256, select_files

__all__ = ["ARCHIVE_FORMATS", "materialize"]

#: ``archive=`` values and the tarfile mode each writes.
ARCHIVE_FORMATS = {"tar": "w", "tar.gz": "w:gz"}
_CHUNK = 8 * 2**20


def materialize(
    src: str | os.PathLike[str] | CheckpointDir,
    dst: str | os.PathLike[str],
    *,
    archive: str | None = None,
    overwrite: bool = False,
    compresslevel: int = 1,
    progress: bool | None = None,
    fsync: bool = True,
    confine: bool | None = None,
    include: Sequence[str] | str | None = None,
    exclude: Sequence[str] | str | None = None,
    components: Sequence[str] | str | None = None,
    weight_sets: str = "all",
    variant: str | None = None,
    manifest: bool = True,
) -> Path:
    """Copy a checkpoint directory with every symlink replaced by the file it points to.

    Args:
        src: a local directory (a hub snapshot ``.../snapshots/<commit>`` included), a hub cache
            repo directory ``models--org--name`` (its ``refs/main`` snapshot), a single file, a
            :class:`CheckpointDir`, or any other form :func:`resolve_ckpt_dir` resolves (then the
            directory it resolves to is copied).
        dst: the output directory, or with ``archive`` the archive file (``model.tar.gz``).
        archive: ``None`` for a directory; ``"tar"`` or ``"tar.gz"`` for a tarball with the files
            at its root and no links in it, as SageMaker expects ``model.tar.gz``.
        overwrite: replace an existing ``dst`` (an empty directory counts as absent).
        compresslevel: gzip level for ``"tar.gz"`` (1: fast; weights barely compress anyway).
        progress: show a tqdm progress bar; ``None``: when stderr is a terminal.
        fsync: flush the output to disk before it is put in place.
        confine: refuse files whose real path lies outside the checkpoint (default: the
            ``CKPTKIT_CONFINE`` environment variable).
        include: copy only files matching one of these globs, matched against the path relative
            to the source or the file name (``"*.json"``, ``"transformer/*"``).
        exclude: leave out files matching one of these globs (``"*.bin"``, ``"*.pth"``).
        components: copy only these pipeline components (their folders) and the pipeline's
            top-level files, as ``resave(components=)`` writes them: the same names are accepted
            and refused (an unknown one raises ``CheckpointNotFoundError`` naming those there are),
            and a weights file at the root (SDXL's single file) is left out; a hub pipeline
            downloads only these components.
        weight_sets: ``"all"`` (every weight set, ``.bin`` duplicates and other variants included)
            or ``"selected"``: per directory and weights name, only the set a load with ``variant``
            would pick -- what a model server needs and nothing else.
        variant: with ``weight_sets="selected"``, the variant to ship (``"fp16"``).
        manifest: write a ``SHA256SUMS`` of every copied file beside them (at the archive's root),
            so that :func:`verify_checkpoint` on the copy checks every file by hash. Digests the
            source records (hub blob names, ``local_dir`` download etags) are taken as recorded;
            other files are hashed.

    Returns:
        ``dst`` as an absolute path. It appears atomically: whole, or not at all.

    Raises:
        DestinationExistsError: ``dst`` exists and ``overwrite`` is false.
        IncompleteCheckpointError: a link dangles (an interrupted download); nothing is written.
        UnsafeCheckpointError: ``confine`` and a link points outside the checkpoint.
        ValueError: an unknown ``archive`` or ``weight_sets``, ``dst`` inside ``src`` or containing
            it (or a file a source link points to), or a selection that leaves no file.
        CheckpointNotFoundError: ``components`` for a directory that is not a pipeline, or naming
            no component of it (``IncompleteCheckpointError``: its folder, or the pipeline's
            ``model_index.json``, is missing).

    Example:
        >>> materialize("~/.cache/huggingface/hub/models--org--name", "model.tar.gz", archive="tar.gz")  # doctest: +SKIP
        PosixPath('/home/me/model.tar.gz')
    """
    if archive is not None and archive not in ARCHIVE_FORMATS:
        raise ValueError(f"archive must be None or one of {sorted(ARCHIVE_FORMATS)}, not {archive!r}")
    source = _source_path(src, confine=confine, components=components)
    dst_path = Path(os.path.abspath(os.path.expanduser(os.fspath(dst))))
    real_src, real_dst = os.path.realpath(source), os.path.realpath(dst_path)
    if _within(real_dst, real_src) or _within(real_src, real_dst):
        raise ValueError(
            f"{dst_path}: the output must not be the source {source}, lie inside it or contain it "
            "(overwrite would delete the source)"
        )

    files = [(source.name, source)] if source.is_file() else list(walk_files(source, exclude=IGNORED_DIRS))
    files = [(rel, path) for rel, path in files if not (manifest and rel == MANIFEST_NAME)]
    if source.is_dir():
        files = select_files(
            files,
            source,
            include=include,
            exclude=exclude,
            components=components,
            weight_sets=weight_sets,
            variant=variant,
        )
    elif include or exclude or components or weight_sets != "all" or variant is not None:
        raise ValueError(
            f"{source}: include/exclude/components/weight_sets/variant select files of a directory"
        )
    known = known_sha256(files, source if source.is_dir() else source.parent) if manifest else {}
    # A hub snapshot's files are links into blobs/: replacing a folder that holds them deletes them.
    for _, path in files:
        if _within(os.path.realpath(path), real_dst):
            raise ValueError(
                f"{dst_path}: the output contains {os.path.realpath(path)}, which the source {path} links "
                "to; overwriting it would delete the source"
            )
    root = None
    if confine_enabled(confine):
        root = checkpoint_root(source if source.is_dir() else source.parent)
        for _, path in files:
            enforce_confinement([path], root, confine=True)
    bar = _progress_bar(files, progress)
    update = bar.update if bar is not None else None
    # Each file is checked again as it is opened (by descriptor), so a swap after the check fails.
    with contextlib.ExitStack() as stack:
        stack.enter_context(confinement(root))
        if bar is not None:
            stack.callback(bar.close)
        if archive is None:
            with staged_directory(dst_path, overwrite=overwrite, fsync=fsync) as staging:
                for rel, path in files:
                    target = staging.path / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    copy_file(path, target, fsync=fsync, progress=update)
                if manifest:
                    digests = {staging.path / rel: digest for rel, digest in known.items()}
                    write_manifest(staging.path, digests=digests, progress=False)
        else:
            with staged_file(dst_path, overwrite=overwrite, fsync=fsync) as staging:
                _write_tar(
                    staging.path,
                    files,
                    ARCHIVE_FORMATS[archive],
                    compresslevel,
                    update,
                    known if manifest else None,
                )
    return dst_path


def _within(path: str, directory: str) -> bool:
    """Whether real path ``path`` is ``directory`` or lies under it."""
    return path == directory or path.startswith(directory.rstrip(os.sep) + os.sep)


def _source_path(
    src: str | os.PathLike[str] | CheckpointDir,
    *,
    confine: bool | None,
    components: Sequence[str] | str | None,
) -> Path:
    if isinstance(src, CheckpointDir):
        return Path(src.path)
    path = Path(os.path.expanduser(os.fspath(src)))
    if (
        path.is_dir()
        and (path / "snapshots").is_dir()
        and path.name.split("--")[0] in ("models", "datasets", "spaces")
    ):
        return _cache_snapshot(path)
    if path.exists():
        return path
    if os.path.lexists(path):
        raise CheckpointNotFoundError(
            f"link points to {os.readlink(path)!r}, which does not exist",
            path=path,
            fix=dangling_link_fix(path),
        )
    # A hub form, passed as the user wrote it; of a pipeline only the components asked for are fetched.
    chosen = [components] if isinstance(components, str) else None if components is None else list(components)
    return Path(resolve_ckpt_dir(src, confine=confine, components=chosen).path)


def _cache_snapshot(repo_dir: Path) -> Path:
    """The snapshot ``refs/main`` names in a hub cache repo folder, else its only snapshot."""
    commit = read_ref(repo_dir, "main")
    if commit is not None and (repo_dir / "snapshots" / commit).is_dir():
        return repo_dir / "snapshots" / commit
    snapshots = sorted(p for p in (repo_dir / "snapshots").iterdir() if p.is_dir())
    if len(snapshots) == 1:
        return snapshots[0]
    raise CheckpointNotFoundError(
        f"cannot tell which snapshot to copy: refs/main is missing and there are {len(snapshots)}",
        path=repo_dir,
        fix="pass the snapshot directory itself: " + ", ".join(str(p) for p in snapshots[:5]),
    )


def _write_tar(
    path: Path,
    files: list[tuple[str, Path]],
    mode: str,
    level: int,
    update: Any,
    known: dict[str, str] | None,
) -> None:
    """Write the tarball; with ``known`` (digests on record), end it with a ``SHA256SUMS`` of every file."""
    kwargs: dict[str, Any] = {"compresslevel": level} if mode == "w:gz" else {}
    opener: Any = tarfile.open
    lines = []
    with open(path, "wb") as raw, opener(fileobj=raw, mode=mode, format=tarfile.PAX_FORMAT, **kwargs) as tar:
        tar.copybufsize = _CHUNK
        directories: set[str] = set()
        for rel, source in files:
            for parent in _parents(rel):
                if parent not in directories:
                    directories.add(parent)
                    tar.addfile(_info(parent, tarfile.DIRTYPE, 0, 0o755, source.stat().st_mtime))
            with open_regular_file(source) as handle:
                stat = os.fstat(handle.fileno())
                info = _info(rel, tarfile.REGTYPE, stat.st_size, 0o644, stat.st_mtime)
                hasher = hashlib.sha256() if known is not None and rel not in known else None
                tar.addfile(info, _Counting(handle, update, hasher) if update or hasher else handle)
            if known is not None:
                lines.append(f"{known.get(rel) or hasher.hexdigest()}  {rel}\n")  # type: ignore[union-attr]
        if known is not None:
            data = "".join(lines).encode()
            info = _info(MANIFEST_NAME, tarfile.REGTYPE, len(data), 0o644, time.time())
            tar.addfile(info, io.BytesIO(data))


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _info(name: str, kind: bytes, size: int, mode: int, mtime: float) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, int(mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


class _Counting:
    """A read-only file wrapper that reports bytes read and hashes them (tarfile reads in bounded chunks)."""

    def __init__(self, handle: Any, update: Any, hasher: Any = None) -> None:
        self.handle, self.update, self.hasher = handle, update, hasher

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size if size >= 0 else _CHUNK)
        if self.update is not None:
            self.update(len(data))
        if self.hasher is not None:
            self.hasher.update(data)
        return data


def _progress_bar(files: list[tuple[str, Path]], progress: bool | None) -> Any:
    if not progress_enabled(progress):
        return None
    from tqdm.auto import tqdm

    total = sum(path.stat().st_size for _, path in files)
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="materialize")
