"""Checking a weight set before any tensor is read: shards present, headers sound, index honest."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ckptkit.errors import CkptError, CorruptCheckpointError
from ckptkit.format.layout import WeightSet
from ckptkit.format.safetensors_header import SafetensorsHeader, read_header

__all__ = ["WeightSetCheck", "check_weight_set"]


@dataclass
class WeightSetCheck:
    """What :func:`check_weight_set` found.

    Attributes:
        weight_set: the set checked.
        headers: shard path -> parsed header (safetensors sets), for reuse by readers.
        errors: problems that make the set unloadable, as the errors to raise.
        warnings: problems worth telling (a ``total_size`` that lies, stray shards), as text.
    """

    weight_set: WeightSet
    headers: dict[Path, SafetensorsHeader] = field(default_factory=dict)
    errors: list[CkptError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_first(self) -> None:
        if self.errors:
            raise self.errors[0]


def check_weight_set(weight_set: WeightSet) -> WeightSetCheck:
    """Check a weight set without reading tensor data.

    Finds: shards the index names that are missing, headers that break the format, keys the index
    lists that are absent from their shard, keys held by two shards, shards holding keys the index
    does not list, and an index ``total_size`` that differs from the headers.

    Example:
        >>> check = check_weight_set(select_weight_set(discover_weight_sets(d)).weight_set)  # doctest: +SKIP
        >>> check.raise_first()  # doctest: +SKIP
    """
    check = WeightSetCheck(weight_set)
    check.errors.extend(weight_set.errors)
    if weight_set.missing:
        try:
            weight_set.raise_if_unusable()
        except CkptError as exc:
            check.errors.append(exc)
    if weight_set.stray:
        names = ", ".join(p.name for p in weight_set.stray)
        check.warnings.append(
            f"{weight_set.index_file}: shard files the index does not list are ignored: {names} "
            "(left over from an earlier save? delete them)"
        )
    if weight_set.format != "safetensors":
        return check
    for path in weight_set.files:
        try:
            check.headers[path] = read_header(path)
        except CkptError as exc:
            check.errors.append(exc)
    _check_keys(check)
    return check


def _check_keys(check: WeightSetCheck) -> None:
    weight_set = check.weight_set
    owner: dict[str, Path] = {}
    for path, header in check.headers.items():
        for name in header.tensors:
            if name in owner:
                check.errors.append(
                    CorruptCheckpointError(
                        f"tensor {name!r} is stored in two shards: {owner[name].name} and {path.name}",
                        path=path,
                        fix="re-save the checkpoint (ckptkit resave) so each tensor is stored once",
                    )
                )
            owner.setdefault(name, path)
    index = weight_set.index
    if index is None:
        return
    # One header lookup per shard, not per key (hashing a Path costs more than the check itself).
    shard_headers = {shard: check.headers.get(index.shard_path(shard)) for shard in index.shard_names}
    for name, shard in index.weight_map.items():
        shard_header = shard_headers[shard]
        if shard_header is not None and name not in shard_header.tensors:
            check.errors.append(
                CorruptCheckpointError(
                    f"index says tensor {name!r} is in {shard}, but that shard does not hold it",
                    path=index.path,
                    fix="the index and shards come from different saves; download or re-save them together",
                )
            )
    if len(check.headers) == len(weight_set.files) and not weight_set.missing:
        unlisted = sorted(set(owner) - set(index.weight_map))
        if unlisted:
            shown = ", ".join(repr(n) for n in unlisted[:5])
            check.warnings.append(
                f"{index.path}: {len(unlisted)} tensors in the shards are not in the index ({shown}); "
                "loaders that trust the index will skip them"
            )
        # A valid header's tensors fill its data buffer exactly (no hole, no overlap): its size.
        actual = sum(header.data_size for header in check.headers.values())
        declared = index.total_size
        if declared is not None and declared != actual:
            check.warnings.append(
                f"{index.path}: metadata.total_size says {declared} bytes but the shards hold {actual}"
            )
