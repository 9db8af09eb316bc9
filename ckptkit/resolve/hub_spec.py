"""What to resolve on the hub (:class:`HubSpec`) and which caches to look in.

Below :mod:`ckptkit.resolve.hub` (which finds and downloads) and
:mod:`ckptkit.resolve.hub_misses` (what to say when the cache falls short), which both use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ckptkit.errors import CheckpointNotFoundError
from ckptkit.format.components import MODEL_INDEX_NAME, pipeline_components
from ckptkit.resolve.repo_files import DownloadPlan, plan_files, plan_pipeline

__all__ = ["CACHE_PATH_ENV", "REPO_FOLDER_PREFIX", "HubSpec", "cache_dirs", "default_cache_dir", "is_offline"]

#: Extra hub caches to search, ``os.pathsep``-separated (after ``cache_dir`` and ``HF_HUB_CACHE``).
CACHE_PATH_ENV = "CKPTKIT_CACHE_PATH"

#: How huggingface_hub names a model repo's folder in a cache.
REPO_FOLDER_PREFIX = "models--"


@dataclass
class HubSpec:
    """A component of a hub repo to resolve.

    Attributes:
        repo_id: ``"org/name"``.
        directory: the folder inside the repo that holds the weights (``""`` for the root).
        filename: the path in the repo of one weights file (the file form), else ``None``.
        caches: every hub cache to look in, in order; downloads go to the first.
        cache_dir: the cache being looked at (set from ``caches``).
        revision: branch, tag or commit asked for (``None`` = ``main``).
        components: for a whole pipeline, only these components.
        pick_only_snapshot: for a ``models--org--name`` folder given without a ``refs/main``, use its
            only snapshot.
    """

    repo_id: str
    directory: str = ""
    filename: str | None = None
    cache_dir: Path = field(default_factory=Path)
    revision: str | None = None
    variant: str | None = None
    variant_fallback: str = "warn"
    weights_name: str | None = None
    allow_patterns: list[str] | None = None
    token: str | bool | None = None
    endpoint: str | None = None
    offline: bool = False
    pick_only_snapshot: bool = False
    looked: list[str] = field(default_factory=list)
    caches: list[Path] = field(default_factory=list)
    components: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.caches:
            self.caches = [self.cache_dir]
        self.cache_dir = self.caches[0]

    @property
    def whole_repo(self) -> bool:
        return not self.directory and self.filename is None

    def plan(self, listing: list[str], snapshot: Path) -> DownloadPlan:
        """Which files of ``listing`` are needed (see :mod:`ckptkit.resolve.repo_files`).

        For a repo whose root has ``model_index.json`` (a pipeline), that file is read from the
        snapshot first: until it is there, the plan is that file alone.
        """
        # The listing form of pipeline_components' rule: the repo's root lists model_index.json.
        if self.whole_repo and MODEL_INDEX_NAME in listing:
            if not (snapshot / MODEL_INDEX_NAME).is_file():
                return DownloadPlan([MODEL_INDEX_NAME], components=[])
            pipeline = plan_pipeline(
                listing,
                names=[c.name for c in pipeline_components(snapshot) or []],
                components=self.components,
                snapshot=snapshot,
                variant=self.variant,
                variant_fallback=self.variant_fallback,
                label=self.repo_id,
            )
            if pipeline is not None:
                return pipeline
        if self.components is not None:
            raise CheckpointNotFoundError(
                f"components={self.components!r} was given but {self.label} is not a pipeline "
                f"(no {MODEL_INDEX_NAME} at its root)",
                path=self.label,
                fix="leave out components=",
            )
        return plan_files(
            listing,
            directory=self.directory,
            filename=self.filename,
            snapshot=snapshot,
            variant=self.variant,
            variant_fallback=self.variant_fallback,
            weights_name=self.weights_name,
            label=self.repo_id,
        )

    @property
    def storage(self) -> Path:
        return self.storage_in(self.cache_dir)

    def storage_in(self, cache: Path) -> Path:
        """The repo's folder in the hub cache ``cache`` (``models--org--name``)."""
        return cache / (REPO_FOLDER_PREFIX + self.repo_id.replace("/", "--"))

    @property
    def label(self) -> str:
        where = self.filename or self.directory
        return f"{self.repo_id}/{where}" if where else self.repo_id


def is_offline() -> bool:
    """``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``, read now and as huggingface_hub read them at import."""
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper()
    return bool(constants.HF_HUB_OFFLINE) or env in constants.ENV_VARS_TRUE_VALUES


def default_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The hub cache huggingface_hub uses: ``cache_dir``, else ``HF_HUB_CACHE``, else ``$HF_HOME/hub``."""
    from huggingface_hub import constants

    return Path(os.path.expanduser(os.fspath(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)))


def cache_dirs(
    cache_dir: str | os.PathLike[str] | list[str | os.PathLike[str]] | None = None, *, search: bool = True
) -> list[Path]:
    """Every hub cache to look in, in order: ``cache_dir`` (one or a list), ``HF_HUB_CACHE`` (else
    ``$HF_HOME/hub``), then each folder of ``CKPTKIT_CACHE_PATH``. Downloads go to the first.

    Args:
        cache_dir: the caches named by the caller.
        search: also the user's other caches (``False``: ``cache_dir`` alone, when one is given).

    Example:
        >>> cache_dirs("/tmp/c", search=False)
        [PosixPath('/tmp/c')]
    """
    named = [cache_dir] if isinstance(cache_dir, (str, os.PathLike)) else list(cache_dir or [])
    found = [default_cache_dir(c) for c in named]
    if search or not found:
        found.append(default_cache_dir(None))
        extra = os.environ.get(CACHE_PATH_ENV, "")
        found += [default_cache_dir(p) for p in extra.split(os.pathsep) if p.strip()]
    unique: dict[str, Path] = {}
    for path in found:
        unique.setdefault(os.path.abspath(path), path)
    return list(unique.values())
