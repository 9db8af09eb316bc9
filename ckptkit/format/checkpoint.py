"""``CheckpointDir``: what every verb hands to the next — one concrete, validated weight set."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ckptkit.errors import CheckpointNotFoundError
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
        components: for a whole pipeline (``model_index.json``), each component holding weights
            by name (``"vae"``, ``"transformer"``); a weights file at the pipeline's root (SDXL's
            ``sd_xl_base_1.0.safetensors``) is one more entry, named by its weights name, with
            ``subfolder=None``. Empty for a single model.
        cache_dir: the hub cache the files were found in (hub forms).

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
    components: dict[str, CheckpointDir] = field(default_factory=dict, repr=False)
    cache_dir: Path | None = None

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    @property
    def weight_set(self) -> WeightSet | None:
        return self.selection.weight_set if self.selection else None

    @property
    def is_pipeline(self) -> bool:
        """Whether this is a whole pipeline (see ``components``) rather than one weight set."""
        return bool(self.components)

    def require_single(self) -> CheckpointDir:
        """``self`` when it is one weight set; a pipeline raises, naming its components.

        Raises:
            CheckpointNotFoundError: this is a whole pipeline; the fix names ``subfolder=``.
        """
        if self.components:
            names = [n for n, c in self.components.items() if c.subfolder is not None]
            raise CheckpointNotFoundError(
                "is a whole pipeline, not one model's weights",
                path=self.path,
                fix="pass subfolder= one of: " + ", ".join(names),
            )
        return self

    @classmethod
    def pipeline(cls, path: Path, components: dict[str, CheckpointDir], **kwargs: object) -> CheckpointDir:
        """The whole pipeline at ``path``: every component's weight files, in component order."""
        formats = {c.format for c in components.values()}
        variants = {c.variant for c in components.values()}
        return cls(
            path=path,
            weight_files=[p for c in components.values() for p in c.weight_files],
            format=formats.pop() if len(formats) == 1 else "mixed",
            variant=variants.pop() if len(variants) == 1 else None,
            components=components,
            **kwargs,  # type: ignore[arg-type]
        )

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
