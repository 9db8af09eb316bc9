"""The weight files a load reads: validated, and cut to the shards that hold the selected keys."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ckptkit.errors import CkptWarning
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.index import read_index
from ckptkit.format.keys import KeySelection, select_keys
from ckptkit.format.layout import WeightSet
from ckptkit.format.naming import parse_weight_filename
from ckptkit.format.safetensors_header import SafetensorsHeader
from ckptkit.format.validate import check_weight_set

__all__ = ["WeightFiles"]


class WeightFiles:
    """The validated files to read and how keys are chosen; built before any tensor is read."""

    def __init__(
        self, checkpoint: CheckpointDir, *, prefix: str | None, strip_prefixes: Sequence[str] | str | None
    ) -> None:
        self.checkpoint = checkpoint
        self.prefix = prefix
        self.strip_prefixes = strip_prefixes
        weight_set = checkpoint.weight_set or _weight_set_of(checkpoint)
        index = weight_set.index
        self.index_keys: dict[Path, list[str]] | None = None
        partial = False
        if index is not None:
            # Only the shards that hold selected keys are checked and opened.
            wanted = self.select(index.weight_map, where=index.path).source_keys
            needed = {name for key, name in index.weight_map.items() if key in wanted}
            # Shard names are paths relative to the index ("sub/s.safetensors" included).
            needed_paths = {index.shard_path(name) for name in needed}
            weight_set = dataclasses.replace(
                weight_set,
                files=[p for p in weight_set.files if p in needed_paths],
                missing=[p for p in weight_set.missing if p in needed_paths],
            )
            partial = len(needed) < len(index.shard_names)
            self.index_keys = {
                index.shard_path(name): keys for name, keys in index.keys_by_shard().items() if name in needed
            }
        check = check_weight_set(weight_set)
        check.raise_first()
        # Index-wide findings (total_size, unlisted tensors) are meaningless for a subset of shards.
        for text in [] if partial else check.warnings:
            warnings.warn(text, CkptWarning, stacklevel=5)
        self.files = list(weight_set.files)
        self.headers: dict[Path, SafetensorsHeader] = check.headers

    def select(self, keys: Any, *, where: Path | None = None) -> KeySelection:
        return select_keys(
            keys, prefix=self.prefix, strip_prefixes=self.strip_prefixes, where=where or self.checkpoint.path
        )


def _weight_set_of(checkpoint: CheckpointDir) -> WeightSet:
    files = list(checkpoint.weight_files)
    parsed = parse_weight_filename(files[0].name) if files else None
    weight_set = WeightSet(
        directory=checkpoint.path,
        name=parsed.stem if parsed else "model",
        format=checkpoint.format,
        variant=checkpoint.variant,
        files=[p for p in files if p.exists()],
        index_file=checkpoint.index_file,
        missing=[p for p in files if not p.exists()],
    )
    if checkpoint.index_file is not None:
        weight_set.index = read_index(checkpoint.index_file)
    return weight_set
