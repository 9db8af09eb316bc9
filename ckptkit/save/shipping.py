"""What :func:`~ckptkit.save.materialize.materialize` ships: which files, and the digests of each.

Choosing files: glob patterns (``include``/``exclude``, matched against the path relative to the
source, as ``huggingface_hub``'s ``allow_patterns``), pipeline components, and "selected weight
sets only" -- in every directory, the one weight set per weights name that a load with ``variant``
would pick (so the ``.bin`` duplicates and other variants stay behind).

Digests: a hub snapshot's files are links to blobs named by their sha256 (LFS files), and
``snapshot_download(local_dir=...)`` records the same as the etag; those are taken as they are, so
the ``SHA256SUMS`` written with the copy records what the Hub says the bytes are, not what a
possibly damaged cache holds.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from ckptkit.format.components import select_components
from ckptkit.format.hub_files import (
    find_local_dir_root,
    hub_blob_expectation,
    hub_repo_root,
    read_download_metadata,
)
from ckptkit.format.layout import discover_weight_sets, select_weight_set
from ckptkit.format.naming import is_weights_name

__all__ = ["WEIGHT_SET_CHOICES", "known_sha256", "select_files"]

#: ``weight_sets=`` values: every set, or only those a load would select.
WEIGHT_SET_CHOICES = ("all", "selected")


def select_files(
    files: list[tuple[str, Path]],
    source: Path,
    *,
    include: Sequence[str] | str | None = None,
    exclude: Sequence[str] | str | None = None,
    components: Sequence[str] | str | None = None,
    weight_sets: str = "all",
    variant: str | None = None,
) -> list[tuple[str, Path]]:
    """The ``(relative path, path)`` pairs to ship, in the order given.

    Args:
        files: every file of the source, relative posix path first.
        source: the directory they are relative to.
        include: keep only files matching one of these globs (``"*.json"``, ``"transformer/*"``).
        exclude: drop files matching one of these globs (applied after ``include``).
        components: keep only these pipeline components (their folders) and the pipeline's
            top-level files other than weights (``model_index.json``), as ``resave(components=)``
            writes them: which names are components is :func:`select_components`' rule, the one
            resolution follows; a weights file at the root (SDXL's single file) is another weight
            set, left out.
        weight_sets: ``"all"``, or ``"selected"``: in each directory keep, per weights name, only
            the set a load with ``variant`` picks (safetensors before ``.bin``, the variant asked for).
        variant: the variant a load would ask for; only with ``weight_sets="selected"``.

    Raises:
        ValueError: an unknown ``weight_sets``, ``variant`` without ``weight_sets="selected"``, or a
            selection that leaves no file.
        CkptError: ``components`` on a directory that is not a pipeline, naming no component of it
            or one whose folder is absent, or a dangling ``model_index.json`` (see
            :func:`select_components`).
        VariantNotFoundError: by the variant rules, for a directory where ``variant`` cannot be chosen.
    """
    if weight_sets not in WEIGHT_SET_CHOICES:
        raise ValueError(f"weight_sets must be one of {WEIGHT_SET_CHOICES}, not {weight_sets!r}")
    if variant is not None and weight_sets != "selected":
        raise ValueError(
            "variant= chooses among weight sets: pass weight_sets='selected' with it "
            "(the default 'all' ships every variant)"
        )
    include, exclude, components = _listed(include), _listed(exclude), _listed(components)
    chosen = list(files)
    if components:
        folders = select_components(source, components)
        chosen = [
            (rel, p)
            for rel, p in chosen
            if (rel.split("/", 1)[0] in folders if "/" in rel else not is_weights_name(rel))
        ]
    if include:
        chosen = [(rel, p) for rel, p in chosen if _matches(rel, include)]
    if exclude:
        chosen = [(rel, p) for rel, p in chosen if not _matches(rel, exclude)]
    if weight_sets == "selected":
        dropped = _unselected(source, {str(PurePosixPath(rel).parent) for rel, _ in chosen}, variant)
        chosen = [(rel, p) for rel, p in chosen if rel not in dropped]
    if not chosen:
        raise ValueError(f"{source}: the selection (include/exclude/components) leaves no file to copy")
    return chosen


def _listed(value: Sequence[str] | str | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _matches(rel: str, patterns: list[str]) -> bool:
    return any(
        fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(PurePosixPath(rel).name, p) for p in patterns
    )


def _unselected(source: Path, directories: set[str], variant: str | None) -> set[str]:
    """Relative paths of the weight files and indexes a load with ``variant`` would not use."""
    dropped: set[str] = set()
    for rel_dir in sorted(directories):
        directory = source / rel_dir if rel_dir != "." else source
        sets = discover_weight_sets(directory)
        for family in sorted({s.family for s in sets}):
            same = [s for s in sets if s.family == family]
            keep = select_weight_set(
                same, variant=variant, variant_fallback="allow", where=directory
            ).weight_set
            for weight_set in same:
                if weight_set is keep:
                    continue
                for path in [*weight_set.files, *([weight_set.index_file] if weight_set.index_file else [])]:
                    dropped.add(Path(os.path.relpath(path, source)).as_posix())
    return dropped


def known_sha256(files: list[tuple[str, Path]], source: Path) -> dict[str, str]:
    """Relative path -> sha256 for the files whose digest is on record (hub blob names, etags).

    Nothing is read but links and small metadata files.

    Example:
        >>> known_sha256([], Path("."))
        {}
    """
    repo_root = hub_repo_root(source)
    local_root = None if repo_root is not None else find_local_dir_root(source)
    known: dict[str, str] = {}
    for rel, path in files:
        if repo_root is not None:
            expected = hub_blob_expectation(path, repo_root)
            if expected is not None and expected.algorithm == "sha256":
                known[rel] = expected.hexdigest
        elif local_root is not None:
            metadata = read_download_metadata(path, local_root)
            etag = (metadata.etag if metadata is not None else "") or ""
            if len(etag) == 64 and all(c in "0123456789abcdef" for c in etag):
                known[rel] = etag
    return known
