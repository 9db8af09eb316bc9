"""``CheckpointDir``: what every verb hands to the next — one concrete, validated weight set."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ckptkit.format.layout import Selection, WeightSet

__all__ = ["CheckpointDir"]


@dataclass
class CheckpointDir(os.PathLike):  # type: ignore[type-arg]
    """A local directory that holds a chosen, complete set of weights.

    It is a path-like object: pass it wherever a directory path is expected.

    Attributes:
        path: the directory that holds the weights (after ``subfolder``).
        repo_id: ``"org/name"`` when it came from a hub repo or cache.
        revision: commit hash when known.
        subfolder: the subfolder inside the repo or pipeline, if any.
        variant: the variant actually selected (``"fp16"``, ``None``, ...).
        weight_files: the files that hold the selected weights, in load order.
        index_file: the ``*.index*.json`` when sharded.
        format: ``"safetensors"`` or ``"torch"``.
        root: the checkpoint root links are judged against (the ``models--org--name`` folder for
            a hub snapshot, else the directory given).
        selection: how the weight set was chosen (requested variant, fallback cast).

    Example:
        >>> ckpt = resolve_ckpt_dir("PixArt-alpha/PixArt-XL-2-1024-MS", subfolder="vae")  # doctest: +SKIP
        >>> os.fspath(ckpt)  # doctest: +SKIP
        '/root/.cache/huggingface/hub/models--PixArt-alpha--PixArt-XL-2-1024-MS/snapshots/<commit>/vae'
    """

    path: Path
    weight_files: list[Path]
    format: str
    variant: str | None = None
    index_file: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    subfolder: str | None = None
    root: Path | None = None
    selection: Selection | None = field(default=None, repr=False)

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def weight_set(self) -> WeightSet | None:
        return self.selection.weight_set if self.selection else None

    @classmethod
    def from_selection(cls, path: Path, selection: Selection, **kwargs: object) -> CheckpointDir:
        chosen = selection.weight_set
        return cls(
            path=path,
            weight_files=list(chosen.files),
            format=chosen.format,
            variant=chosen.variant,
            index_file=chosen.index_file,
            selection=selection,
            **kwargs,  # type: ignore[arg-type]
        )
