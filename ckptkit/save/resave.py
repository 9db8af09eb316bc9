"""``resave``: rewrite any checkpoint as safetensors, streaming, atomically.

The output directory is built next to ``dst`` and swapped into place in one step (see
:mod:`ckptkit.io.atomic`), so a crash leaves either the old ``dst`` or the complete new one. When
``dst`` exists (``overwrite=True``) its files are kept — hard-linked into the new directory — except
the safetensors files of the weights name and variant being written, which disappear with the swap.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.components import check_subfolder
from ckptkit.format.confine import checkpoint_root, confine_enabled, enforce_confinement
from ckptkit.format.dtypes import canonical_dtype, variant_dtype
from ckptkit.format.file_kinds import DCP_METADATA_NAME, is_dcp_directory
from ckptkit.format.layout import IGNORED_DIRS
from ckptkit.format.naming import (
    TRANSFORMERS_WEIGHTS_NAME,
    check_output_names,
    is_weights_name,
    parse_index_filename,
    parse_weight_filename,
    weights_family,
)
from ckptkit.format.safe_files import confinement
from ckptkit.format.sizes import parse_size
from ckptkit.io.atomic import (
    Staging,
    copy_file,
    link_or_copy,
    staged_directory,
    walk_files,
)
from ckptkit.io.progress import progress_enabled
from ckptkit.io.writer import ShardWriter, index_bytes, index_name_for, plan_shards, write_all
from ckptkit.resolve.resolve import resolve_ckpt_dir, resolve_local
from ckptkit.save.sources import DcpCheckpoint, plan_source_tensors

__all__ = ["resave"]

logger = logging.getLogger("ckptkit")


@dataclass
class _Job:
    """One weight set to rewrite: ``ckpt`` goes to ``<dst>/<rel>``."""

    rel: str
    ckpt: CheckpointDir | DcpCheckpoint
    name: str
    variant: str | None
    dtype: str | None


def resave(
    src: str | os.PathLike[str] | CheckpointDir | DcpCheckpoint,
    dst: str | os.PathLike[str],
    *,
    max_shard_size: int | str | None = "10GB",
    variant: str | None = None,
    dtype: object = None,
    subfolder: str | None = None,
    components: Sequence[str] | str | None = None,
    weights_name: str | None = None,
    overwrite: bool = False,
    copy_other_files: bool = True,
    progress: bool | None = None,
    fsync: bool = True,
    unwrap: str | bool | None = None,
    confine: bool | None = None,
) -> CheckpointDir:
    """Rewrite a checkpoint as safetensors shards of at most ``max_shard_size``, atomically.

    With no dtype change, tensor bytes are copied file-to-file and only headers are rebuilt: memory
    use does not grow with the model. With ``dtype``, tensors are converted one at a time.

    Args:
        src: anything :func:`resolve_ckpt_dir` accepts (a local directory or weights file, a hub
            form, a pipeline's repo id included), or a :class:`CheckpointDir`. A whole pipeline
            (``model_index.json``) without ``subfolder`` resaves every component holding weights,
            each into its folder, and each safetensors weights file at its root (SDXL's single
            file) beside them; the scheduler, tokenizers and configs are copied. Atomic as a whole:
            ``dst`` is the old pipeline or the complete new one, never a mix. A
            ``torch.distributed.checkpoint`` directory (one holding ``.metadata``), or a
            :class:`~ckptkit.save.sources.DcpCheckpoint` naming one, is read with ``dcp.load``, a
            batch at a time (see :func:`~ckptkit.dcp_to_safetensors`); its output is named
            ``model`` unless ``weights_name`` says otherwise.
        dst: the output directory (for ``subfolder=``, the component's directory). May be ``src``
            itself (re-shard in place); must not lie inside it otherwise.
        max_shard_size: an int (bytes) or a size string (``"10GB"``, ``"500MiB"``); ``None`` writes
            one file. Shards are filled greedily in key order; a larger tensor gets its own shard.
        variant: the variant to write (``"fp16"``), in the current naming scheme. It is also the
            variant read: when the source lacks it, the default weights are read and cast to the
            dtype the variant names (fp16/bf16/fp32) unless ``dtype`` is given. ``None`` keeps the
            source's variant.
        dtype: cast floating tensors to this dtype (``"bf16"``, ``torch.float16``).
        subfolder: the component of a pipeline to resave.
        components: for a whole pipeline, resave only these components (``["transformer", "vae"]``;
            a hub pipeline downloads only them); with ``copy_other_files`` the other files of their
            folders and the pipeline's top-level files travel, other components' folders do not.
        weights_name: the name the output files get (``"model"`` writes ``model.safetensors``,
            ``"diffusion_pytorch_model"`` ...); default: the source's (``pytorch_model`` becomes
            ``model``, as the output is safetensors). It never filters the source: to pick one of
            several weight sets there, pass the path of its file or index as ``src``. Not for a
            whole pipeline.
        overwrite: replace an existing, non-empty ``dst``. Its other files are kept; the old
            safetensors files of the same weights name and variant are removed once the new set is
            in place.
        copy_other_files: copy configs, tokenizer files, ``model_index.json`` and other non-weight
            files as real files (links are followed): a pipeline's whole tree, or the files directly
            in a model directory (not its subfolders). Other weight sets of ``src`` (other variants,
            ``.bin`` copies, torch files at a pipeline's root) are not copied; use
            :func:`materialize` for a full copy.
        progress: show a tqdm progress bar; ``None``: when stderr is a terminal.
        fsync: flush files and directories to disk before the swap (off: faster, still atomic
            against a crash of the process, not against a power loss).
        unwrap: for torch files, the key the state dict is nested under (``"state_dict"``); not
            for a DCP directory (choose its keys with ``DcpCheckpoint(prefix=)``).
        confine: refuse source files whose real path lies outside the checkpoint (default: the
            ``CKPTKIT_CONFINE`` environment variable).

    Returns:
        The new checkpoint: a :class:`CheckpointDir` of ``dst`` (for a pipeline, its ``weight_files``
        list every component's files).

    Raises:
        DestinationExistsError: ``dst`` exists and ``overwrite`` is false.
        CkptError: the source is missing, incomplete, damaged or lacks the variant
            (``CheckpointNotFoundError``, ``IncompleteCheckpointError``, ``CorruptCheckpointError``,
            ``VariantNotFoundError``); nothing is written.
        UnsafeCheckpointError: ``confine`` and a file links outside the checkpoint, or a torch file
            needs more than ``weights_only`` allows.
        ValueError: a bad size or dtype, a ``variant``/``weights_name``/``subfolder`` that would
            not make plain names inside ``dst`` (``"x/../f"``, ``"../escaped"``, ``""``), ``dst``
            inside ``src``, ``weights_name`` for a pipeline, or ``subfolder``/``unwrap`` for a DCP
            directory.

    Example:
        >>> ckpt = resave("./sdxl/unet", "./unet-single", max_shard_size=None)  # doctest: +SKIP
        >>> [p.name for p in ckpt.weight_files]  # doctest: +SKIP
        ['diffusion_pytorch_model.safetensors']
    """
    # Names are checked before anything is read or staged: a refused call leaves no trace.
    check_output_names(weights_name, variant)
    if subfolder is not None:
        check_subfolder(subfolder, os.fspath(src))
    limit = None if max_shard_size is None else parse_size(max_shard_size)  # type: ignore[arg-type]
    if limit == 0:
        raise ValueError("max_shard_size must be positive (or None for a single file)")
    cast = canonical_dtype(dtype) if dtype is not None else None
    source_root, jobs = _plan_jobs(
        src,
        subfolder=subfolder,
        components=[components] if isinstance(components, str) else components,
        variant=variant,
        weights_name=weights_name,
        dtype=cast,
        confine=confine,
        unwrap=unwrap,
    )
    dst_path = Path(os.path.abspath(os.path.expanduser(os.fspath(dst))))
    if source_root is not None:
        _check_not_nested(source_root, dst_path)
    confined_root = None
    if confine_enabled(confine):
        _check_sources_confined(source_root, jobs)
        first = jobs[0].ckpt
        root = first.root if isinstance(first, CheckpointDir) else None
        confined_root = checkpoint_root(source_root) if source_root else root or first.path

    bar = _progress_bar(jobs, progress)
    try:
        # Files are checked again as they are opened (by descriptor): a swap after the check fails.
        with (
            confinement(confined_root),
            staged_directory(dst_path, overwrite=overwrite, fsync=fsync) as staging,
        ):
            if staging.existing is not None:
                _keep_existing(staging, jobs, fsync=fsync)
            same_place = source_root is not None and os.path.realpath(source_root) == os.path.realpath(
                dst_path
            )
            if copy_other_files and source_root is not None and not same_place:
                _copy_other_files(
                    source_root, staging.path, jobs, fsync=fsync, only_components=components is not None
                )
            written = [
                _write_job(job, staging.path, limit, fsync=fsync, bar=bar, unwrap=unwrap) for job in jobs
            ]
    finally:
        if bar is not None:
            bar.close()
    return _result(dst_path, jobs, written)


def _plan_jobs(
    src: str | os.PathLike[str] | CheckpointDir | DcpCheckpoint,
    *,
    subfolder: str | None,
    components: Sequence[str] | None = None,
    variant: str | None,
    weights_name: str | None,
    dtype: str | None,
    confine: bool | None = None,
    unwrap: str | bool | None = None,
) -> tuple[Path | None, list[_Job]]:
    """The weight sets to write, and the directory whose other files travel with them.

    A pipeline gives one job per component (into its folder) and one per weights file at its root
    (only the chosen components, and no root file, with ``components``).
    """
    if not isinstance(src, (CheckpointDir, DcpCheckpoint)):
        path = Path(os.path.abspath(os.path.expanduser(os.fspath(src))))
        if path.is_dir() and is_dcp_directory(path):
            src = DcpCheckpoint(path)
    if isinstance(src, DcpCheckpoint):
        for option, value in (("subfolder", subfolder), ("components", components), ("unwrap", unwrap)):
            if value is not None:
                raise ValueError(
                    f"{src.path}: {option}= does not apply to a DCP directory (it has no components and "
                    "no nesting); choose its keys with DcpCheckpoint(prefix=) or dcp_to_safetensors(prefix=)"
                )
        cast = dtype if dtype is not None else variant_dtype(variant)
        return src.path, [_Job("", src, weights_name or TRANSFORMERS_WEIGHTS_NAME, variant, cast)]
    if isinstance(src, CheckpointDir) and (subfolder is not None or components is not None):
        src = src.path
    single_file = not isinstance(src, CheckpointDir) and Path(os.path.expanduser(os.fspath(src))).is_file()
    if not isinstance(src, CheckpointDir):
        src = resolve_ckpt_dir(
            src,
            subfolder=subfolder,
            components=list(components) if components is not None else None,
            variant=variant,
            variant_fallback="allow",
            confine=confine,
        )
    ckpt = src
    if ckpt.components:
        if weights_name is not None:
            raise ValueError(
                f"{ckpt.path}: weights_name= names one model's weights, and this is a whole pipeline; "
                "pass subfolder= to resave one component under another name"
            )
        jobs = [_job(part.subfolder or "", part, variant, None, dtype) for part in ckpt.components.values()]
        return ckpt.path, jobs
    return (None if single_file else ckpt.path), [_job("", ckpt, variant, weights_name, dtype)]


def _job(
    rel: str, ckpt: CheckpointDir, variant: str | None, weights_name: str | None, dtype: str | None
) -> _Job:
    if weights_name is None:
        stem = ckpt.weight_set.name if ckpt.weight_set is not None else None
        if stem is None:
            parsed = parse_weight_filename(ckpt.weight_files[0].name)
            stem = parsed.stem if parsed is not None else ckpt.weight_files[0].stem
        weights_name = weights_family(stem)
    cast = dtype
    if cast is None and ckpt.selection is not None:
        cast = ckpt.selection.cast_dtype
    return _Job(rel, ckpt, weights_name, variant if variant is not None else ckpt.variant, cast)


def _check_not_nested(source_root: Path, dst: Path) -> None:
    real_src, real_dst = os.path.realpath(source_root), os.path.realpath(dst)
    if real_src == real_dst:
        return
    if real_dst.startswith(real_src.rstrip(os.sep) + os.sep) or real_src.startswith(
        real_dst.rstrip(os.sep) + os.sep
    ):
        raise ValueError(f"{dst}: the output must not lie inside the source {source_root} or contain it")


def _check_sources_confined(source_root: Path | None, jobs: list[_Job]) -> None:
    for job in jobs:
        if isinstance(job.ckpt, DcpCheckpoint):
            continue  # its files are all under source_root, checked below
        root = job.ckpt.root or checkpoint_root(job.ckpt.path)
        for path in [*job.ckpt.weight_files, *([job.ckpt.index_file] if job.ckpt.index_file else [])]:
            enforce_confinement([path], root, confine=True)
    if source_root is not None:
        root = checkpoint_root(source_root)
        for _, path in walk_files(source_root, exclude=IGNORED_DIRS):
            enforce_confinement([path], root, confine=True)


def _is_stale(name: str, job: _Job) -> bool:
    """A safetensors file or index of the weights name and variant being written."""
    parsed = parse_weight_filename(name) or parse_index_filename(name)
    return (
        parsed is not None
        and parsed.ext == "safetensors"
        and parsed.stem == job.name
        and parsed.variant == job.variant
    )


def _job_of(rel: str, jobs: list[_Job]) -> list[_Job]:
    directory = rel.rpartition("/")[0]
    return [job for job in jobs if job.rel == directory]


def _job_of_folder(rel: str, jobs: list[_Job]) -> bool:
    """Whether ``rel`` lies in the folder of one of ``jobs`` (a component's, at any depth)."""
    return any(job.rel and rel.startswith(job.rel.rstrip("/") + "/") for job in jobs)


def _keep_existing(staging: Staging, jobs: list[_Job], *, fsync: bool) -> None:
    """Hard-link the files of the existing ``dst`` into the new one, leaving out the stale set."""
    assert staging.existing is not None
    for rel, path in walk_files(staging.existing, exclude=IGNORED_DIRS):
        name = rel.rpartition("/")[2]
        if any(_is_stale(name, job) for job in _job_of(rel, jobs)):
            continue
        target = staging.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        link_or_copy(path, target, fsync=fsync)


def _copy_other_files(
    source_root: Path, staging: Path, jobs: list[_Job], *, fsync: bool, only_components: bool = False
) -> None:
    """Copy the non-weight files: a pipeline's whole tree, a model directory's own files.

    A model directory's subfolders are left out: a repo root can hold whole other models there. With
    ``only_components``, so are a pipeline's folders other than those of the components written.
    """
    pipeline = any(job.rel for job in jobs)
    dcp = any(isinstance(job.ckpt, DcpCheckpoint) for job in jobs)
    for rel, path in walk_files(source_root, exclude=IGNORED_DIRS):
        if not pipeline and "/" in rel:
            continue
        if dcp and (rel == DCP_METADATA_NAME or rel.endswith(".distcp")):
            continue  # the source's own files: what is written from them is the output
        if only_components and "/" in rel and not _job_of_folder(rel, jobs):
            continue
        weights = is_weights_name(rel.rpartition("/")[2])
        if weights and (_job_of(rel, jobs) or (pipeline and "/" not in rel)):
            # The sets being written, and a pipeline's root weights not rewritten (a training .pth).
            continue
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(target):
            target.unlink()
        copy_file(path, target, fsync=fsync)


def _write_job(
    job: _Job, staging: Path, limit: int | None, *, fsync: bool, bar: Any, unwrap: str | bool | None
) -> list[Path]:

    directory = staging / job.rel if job.rel else staging
    directory.mkdir(parents=True, exist_ok=True)
    logger.info("resaving %s -> %s (%s, variant=%s)", job.ckpt.path, directory, job.name, job.variant)
    with plan_source_tensors(job.ckpt, dtype=job.dtype, unwrap=unwrap) as source:
        shards = plan_shards(source.tensors, max_shard_size=limit, weights_name=job.name, variant=job.variant)
        source.written_as(shards)
        if bar is not None:
            bar.total += sum(s.nbytes for s in shards)
            bar.refresh()
        names = [s.filename for s in shards] + (
            [index_name_for(job.name, job.variant)] if len(shards) > 1 else []
        )
        for name in names:
            (directory / name).unlink(missing_ok=True)
        written = []
        with ShardWriter(directory, fsync=fsync, progress=bar.update if bar is not None else None) as writer:
            for shard in shards:
                written.append(writer.write(shard))
    if len(shards) > 1:
        index_path = directory / index_name_for(job.name, job.variant)
        fd = os.open(index_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            write_all(fd, index_bytes(shards))
            if fsync:
                os.fsync(fd)
        finally:
            os.close(fd)
    return written


def _progress_bar(jobs: list[_Job], progress: bool | None) -> Any:
    if not progress_enabled(progress):
        return None
    from tqdm.auto import tqdm

    return tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc="resave")


def _result(dst: Path, jobs: list[_Job], written: list[list[Path]]) -> CheckpointDir:
    if len(jobs) == 1 and not jobs[0].rel:
        return resolve_local(
            dst, variant=jobs[0].variant, variant_fallback="error", weights_name=jobs[0].name
        )
    parts: dict[str, CheckpointDir] = {}
    for job, paths in zip(jobs, written, strict=True):
        if job.rel:
            parts[job.rel] = resolve_local(
                dst, subfolder=job.rel, variant=job.variant, variant_fallback="error", weights_name=job.name
            )
        else:  # a weights file at the pipeline's root
            parts[job.name] = resolve_local(dst / paths[0].name, variant=job.variant, root=dst)
    return CheckpointDir.pipeline(dst, parts, root=dst)
