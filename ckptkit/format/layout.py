"""Which weight sets a directory holds, and which one to use.

A *weight set* is one loadable copy of a model's weights: a single file, or an index with its
shards, or numbered shards without an index. A directory can hold several (``fp16`` and default,
safetensors and ``.bin``); :func:`select_weight_set` applies the variant rules of ckptkit's API.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ckptkit.errors import (
    AmbiguousCheckpointError,
    CheckpointNotFoundError,
    CkptError,
    IncompleteCheckpointError,
    VariantNotFoundError,
)
from ckptkit.format.dtypes import variant_dtype
from ckptkit.format.index import ShardIndex, read_index
from ckptkit.format.naming import (
    KNOWN_WEIGHTS_NAMES,
    parse_index_filename,
    parse_weight_filename,
    weights_family,
)
from ckptkit.format.safe_files import os_error

__all__ = [
    "VARIANT_POLICIES",
    "Selection",
    "WeightSet",
    "discover_weight_sets",
    "select_weight_set",
]

VARIANT_POLICIES = ("warn", "allow", "error")
#: Directories that hold download bookkeeping, never weights.
IGNORED_DIRS = (".cache", ".huggingface", ".git")


@dataclass
class WeightSet:
    """One loadable copy of weights in a directory.

    Attributes:
        directory: where the files are.
        name: the weights name (``"diffusion_pytorch_model"``, ``"model"``, or a file's stem).
        format: ``"safetensors"`` or ``"torch"``.
        variant: ``"fp16"`` etc., or ``None`` for the default weights.
        files: the weight files in load order (sorted shard names, as the libraries read them).
        index_file: the index when there is one.
        scheme: ``"legacy"`` when the variant shards use the legacy naming, else ``"current"``.
        missing: files the set needs that do not exist (shards an index names, gaps in numbering).
        errors: what made the set unreadable (a bad index), kept as errors to raise on use.
        stray: shard-named files of the same name and variant that the index does not list
            (left over from an earlier save); never loaded.
    """

    directory: Path
    name: str
    format: str
    variant: str | None
    files: list[Path]
    index_file: Path | None = None
    scheme: str = "current"
    missing: list[Path] = field(default_factory=list)
    errors: list[CkptError] = field(default_factory=list)
    index: ShardIndex | None = field(default=None, repr=False)
    stray: list[Path] = field(default_factory=list)

    @property
    def sharded(self) -> bool:
        return self.index_file is not None or len(self.files) + len(self.missing) > 1

    @property
    def complete(self) -> bool:
        return not self.missing and not self.errors

    @property
    def family(self) -> str:
        return weights_family(self.name)

    @property
    def label(self) -> str:
        """A short description: ``model.safetensors.index.fp16.json (3 shards, safetensors)``."""
        head = self.index_file.name if self.index_file else self.files[0].name if self.files else self.name
        count = len(self.files) + len(self.missing)
        return f"{head} ({count} shard{'s' if count != 1 else ''}, {self.format})" if self.sharded else head

    def raise_if_unusable(self) -> None:
        """Raise the first structural error, or :class:`IncompleteCheckpointError` for missing files."""
        if self.errors:
            raise self.errors[0]
        if self.missing:
            where = self.index_file or self.directory
            names = ", ".join(p.name for p in self.missing)
            raise IncompleteCheckpointError(
                f"{len(self.missing)} of {len(self.files) + len(self.missing)} shards are missing: {names}",
                path=where,
                fix="download the missing shards again (huggingface_hub resumes interrupted downloads), "
                "e.g. `huggingface-cli download <repo> --include '<shard>'`",
            )

    def mtime(self) -> float:
        stamps = [
            p.stat().st_mtime
            for p in [*self.files, *([self.index_file] if self.index_file else [])]
            if p.exists()
        ]
        return max(stamps, default=0.0)


def _walk_files(directory: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except FileNotFoundError:
        raise CheckpointNotFoundError("directory does not exist", path=directory) from None
    except NotADirectoryError:
        raise CheckpointNotFoundError("is not a directory", path=directory) from None
    except OSError as exc:
        raise os_error(directory, exc) from None
    return [Path(e.path) for e in entries if not _is_real_dir(e)]


def _is_real_dir(entry: os.DirEntry[str]) -> bool:
    """A directory (links followed); a link loop or an unreadable target is listed as a file, so
    opening it names what is wrong."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def discover_weight_sets(
    directory: str | os.PathLike[str], *, files: Iterable[Path] | None = None
) -> list[WeightSet]:
    """Find every weight set directly inside ``directory`` (not in subfolders).

    Never raises for a damaged set: its problems are kept in ``WeightSet.missing`` / ``.errors``.

    Args:
        directory: the directory to look in.
        files: the files to consider instead of listing the directory.

    Returns:
        The sets, default before variants, safetensors before torch.

    Example:
        >>> [s.label for s in discover_weight_sets("t5")]  # doctest: +SKIP
        ['model.safetensors.index.json (2 shards, safetensors)', 'model.fp16.safetensors']
    """
    directory = Path(directory)
    paths = list(files) if files is not None else _walk_files(directory)
    names = {p.name: p for p in paths}
    claimed: set[str] = set()
    sets: list[WeightSet] = []

    for path in paths:
        parsed = parse_index_filename(path.name)
        if parsed is None:
            continue
        weight_set = WeightSet(
            directory=directory,
            name=parsed.stem,
            format=parsed.format,
            variant=parsed.variant,
            files=[],
            index_file=path,
            scheme=parsed.scheme,
        )
        try:
            index = read_index(path)
        except CkptError as exc:
            weight_set.errors.append(exc)
        else:
            weight_set.index = index
            for shard in index.shard_paths:
                claimed.add(shard.name)
                (weight_set.files if shard.exists() else weight_set.missing).append(shard)
            if weight_set.files:
                weight_set.scheme = _scheme_of(weight_set.files, parsed.scheme)
        sets.append(weight_set)

    groups: dict[tuple[str, str, str | None, int], list[tuple[int, Path]]] = {}
    for name, path in names.items():
        if name in claimed:
            continue
        parsed_file = parse_weight_filename(name)
        if parsed_file is None:
            continue
        owner = next(
            (
                s
                for s in sets
                if s.index_file is not None
                and parsed_file.shard is not None
                and (s.name, s.variant, s.format)
                == (parsed_file.stem, parsed_file.variant, parsed_file.format)
            ),
            None,
        )
        if owner is not None:
            owner.stray.append(path)
            continue
        if parsed_file.shard is None:
            sets.append(
                WeightSet(directory, parsed_file.stem, parsed_file.format, parsed_file.variant, [path])
            )
            continue
        key = (parsed_file.stem, parsed_file.ext, parsed_file.variant, parsed_file.shard[1])
        groups.setdefault(key, []).append((parsed_file.shard[0], path))
    for (stem, _ext, variant, count), members in groups.items():
        present = dict(members)
        example = members[0][1].name
        weight_set = WeightSet(
            directory,
            stem,
            parse_weight_filename(example).format,  # type: ignore[union-attr]
            variant,
            [present[i] for i in sorted(present)],
            scheme=parse_weight_filename(example).scheme,  # type: ignore[union-attr]
        )
        weight_set.missing = [
            directory / example.replace(f"-{members[0][0]:05d}-of-", f"-{i:05d}-of-")
            for i in range(1, count + 1)
            if i not in present
        ]
        sets.append(weight_set)

    sets.sort(key=lambda s: (s.family, s.variant is not None, s.variant or "", s.format != "safetensors"))
    return sets


def _scheme_of(files: list[Path], fallback: str) -> str:
    parsed = parse_weight_filename(files[0].name)
    return parsed.scheme if parsed is not None and parsed.variant is not None else fallback


@dataclass
class Selection:
    """The weight set chosen for a request.

    Attributes:
        weight_set: the chosen set.
        cast_dtype: torch dtype name to cast to when a variant fell back to the default weights
            (``"float16"`` for ``variant="fp16"``); applies only when the caller gave no ``dtype``.
        warning: the text to warn with (``None`` when nothing needs saying).
        passed_over: sets of other, unrelated weights in the same directory (a text encoder's
            ``.pth`` beside a transformer's shards), for messages that name the candidates.
    """

    weight_set: WeightSet
    cast_dtype: str | None = None
    warning: str | None = None
    passed_over: list[WeightSet] = field(default_factory=list)


def _best(candidates: list[WeightSet]) -> WeightSet:
    # Usable before broken, safetensors before torch; of two usable sets with one format (a stale
    # index beside a newer single file), the one written last.
    def rank(s: WeightSet) -> tuple[bool, bool, float]:
        return (not s.complete, s.format != "safetensors", -s.mtime())

    if len(candidates) == 1:  # nothing to rank (ranking stats every file for its time)
        return candidates[0]
    return sorted(candidates, key=rank)[0]


def select_weight_set(
    sets: list[WeightSet],
    *,
    variant: str | None = None,
    variant_fallback: str = "warn",
    name: str | None = None,
    where: str | os.PathLike[str] | None = None,
) -> Selection:
    """Choose the weight set to load, by the variant rules of ckptkit.

    - ``variant="fp16"`` and fp16 files exist: use them.
    - ``variant="fp16"``, none exist, default files exist: ``variant_fallback`` decides:
      ``"warn"`` uses the defaults (cast to the variant's dtype when it names one) and says so,
      ``"allow"`` does the same silently, ``"error"`` raises :class:`VariantNotFoundError`.
    - ``variant=None``, no default files, exactly one variant: use it and warn; several: raise.
    - Of the same variant, safetensors wins over torch files.

    Args:
        sets: from :func:`discover_weight_sets`.
        variant: the variant asked for.
        variant_fallback: ``"warn"``, ``"allow"`` or ``"error"``.
        name: only consider sets of this weights name (``"model"`` also matches ``"pytorch_model"``).
        where: the directory, for messages.

    Raises:
        CheckpointNotFoundError: there is no weight set at all.
        VariantNotFoundError: by the rules above.
        AmbiguousCheckpointError: several unrelated weight files and nothing says which.
    """
    if variant_fallback not in VARIANT_POLICIES:
        raise ValueError(f"variant_fallback must be one of {VARIANT_POLICIES}, not {variant_fallback!r}")
    where = where if where is not None else (sets[0].directory if sets else None)
    candidates = [s for s in sets if name is None or s.family == weights_family(name)]
    if not candidates:
        wanted = f"weights named {name!r}" if name else "weights"
        found = f" (found: {', '.join(s.label for s in sets)})" if sets else ""
        folders = _weight_subfolders(Path(where)) if where is not None else []
        if folders:
            found += f"; subfolders with weights: {', '.join(f + '/' for f in folders)}"
        raise CheckpointNotFoundError(
            f"no {wanted} here{found}",
            path=where,
            fix=f"pass subfolder= one of: {', '.join(repr(f) for f in folders)}"
            if folders
            else "point at the directory or file that holds the weights (or pass subfolder=)",
        )
    family = _choose_family(candidates, where)
    same = [s for s in candidates if s.family == family]
    selection = _select_variant(same, family, variant=variant, variant_fallback=variant_fallback, where=where)
    selection.passed_over = [s for s in candidates if s.family != family]
    return selection


def _select_variant(
    same: list[WeightSet], family: str, *, variant: str | None, variant_fallback: str, where: object
) -> Selection:
    variants = {s.variant for s in same}

    if variant is not None and variant in variants:
        chosen = [s for s in same if s.variant == variant]
        return Selection(_best(chosen))
    if variant is not None:
        if None not in variants or variant_fallback == "error":
            raise VariantNotFoundError(
                f"no {variant!r} variant of the {family!r} weights; {_variants_present(same)}",
                path=where if isinstance(where, (str, os.PathLike)) else None,
                fix=_variant_choices(same)
                + (
                    f", or variant_fallback='warn' to load the default weights cast to {variant}"
                    if None in variants
                    else ""
                ),
            )
        chosen = [s for s in same if s.variant is None]
        best = _best(chosen)
        cast = variant_dtype(variant)
        warning = None
        if variant_fallback == "warn":
            cast_text = f", cast to {cast}" if cast else ""
            warning = (
                f"{where}: variant {variant!r} was requested but there are no {variant} files; "
                f"loading the default weights {best.label}{cast_text} instead. "
                "Pass variant_fallback='allow' to silence this or 'error' to refuse."
            )
        return Selection(best, cast, warning)
    if None in variants:
        chosen = [s for s in same if s.variant is None]
        return Selection(_best(chosen))
    if len(variants) == 1:
        only = next(iter(variants))
        chosen = [s for s in same if s.variant == only]
        best = _best(chosen)
        warning = (
            f"{where}: no default weights, only the {only!r} variant; loading {best.label}. "
            f"Pass variant={only!r} to silence this."
        )
        return Selection(best, None, warning)
    raise VariantNotFoundError(
        f"no default weights, and {_variants_present(same)}",
        path=where if isinstance(where, (str, os.PathLike)) else None,
        fix=_variant_choices(same),
    )


def _variants_present(sets: list[WeightSet]) -> str:
    named = sorted({s.variant for s in sets if s.variant})
    if not named:
        return "there are only the default weights (no variant): " + ", ".join(s.label for s in sets)
    listing = ", ".join(repr(v) for v in named)
    default = " and the default weights" if any(s.variant is None for s in sets) else ""
    return f"the variants here are {listing}{default}"


def _variant_choices(sets: list[WeightSet]) -> str:
    """``"pass variant='bf16' or variant='fp32'"`` / ``"leave variant out"``: what to pass, plainly."""
    named = sorted({s.variant for s in sets if s.variant})
    choices = [f"variant={v!r}" for v in named]
    if any(s.variant is None for s in sets):
        choices.insert(0, "variant=None (the default weights)")
    return "pass " + " or ".join(choices)


def _choose_family(candidates: list[WeightSet], where: object) -> str:
    families = sorted({s.family for s in candidates})
    if len(families) == 1:
        return families[0]
    known = [f for f in families if f in {weights_family(n) for n in KNOWN_WEIGHTS_NAMES}]
    if len(known) == 1:
        return known[0]
    listing = ", ".join(s.label for s in candidates)
    directory = where if isinstance(where, (str, os.PathLike)) else None
    folders = _weight_subfolders(Path(directory)) if directory is not None else []
    also = f"; subfolders with weights: {', '.join(f + '/' for f in folders)}" if folders else ""
    raise AmbiguousCheckpointError(
        f"several unrelated weight files, cannot tell which to load: {listing}{also}",
        path=directory,
        fix=(f"pass subfolder= one of: {', '.join(repr(f) for f in folders)}; or " if folders else "")
        + "pass the path of the file to load, or weights_name=",
    )


def _weight_subfolders(directory: Path) -> list[str]:
    """The subfolders of ``directory`` that hold weights (``low_noise_model``, ``high_noise_model``)."""
    try:
        entries = sorted(
            (e for e in os.scandir(directory) if e.is_dir() and e.name not in IGNORED_DIRS),
            key=lambda e: e.name,
        )
    except OSError:
        return []
    return [e.name for e in entries if discover_weight_sets(e.path)]
