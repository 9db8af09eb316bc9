"""Finding the component an adapter loads: resolution, pipeline components, ``config.json``."""

from __future__ import annotations

import os
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckptkit.errors import CheckpointNotFoundError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.components import CONFIG_NAME, pipeline_components, read_json_object
from ckptkit.format.validate import check_weight_set
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = ["ComponentRequest", "read_config", "resolve_component"]


@dataclass
class ComponentRequest:
    """The hub/resolution arguments of a ``from_pretrained`` call, as the adapters receive them.

    Attributes:
        spec: ``pretrained_model_name_or_path``.
        subfolder: the component subfolder, or ``None`` to pick it from ``model_index.json``.
        component: the pipeline component this adapter loads by default (``"vae"``).
        classes: class names that identify the component in ``model_index.json``.
        hub: ``cache_dir``, ``revision``, ``local_files_only``, ``token`` for :func:`resolve_ckpt_dir`.
    """

    spec: str | os.PathLike[str] | CheckpointDir
    subfolder: str | None
    component: str
    classes: Collection[str]
    variant: str | None = None
    variant_fallback: str = "warn"
    hub: dict[str, Any] = field(default_factory=dict)


def resolve_component(request: ComponentRequest) -> CheckpointDir:
    """Resolve the weights of one component, offline first, choosing the pipeline component if needed.

    A pipeline directory (one with ``model_index.json``) and no ``subfolder``: the component whose
    class is one of ``request.classes``, else the one named ``request.component``. A hub pipeline
    repo named without ``subfolder``: only its ``request.component`` is resolved (and downloaded).

    Raises:
        CheckpointNotFoundError: neither the spec nor its component holds weights.
        VariantNotFoundError, IncompleteCheckpointError: from resolution.
        CorruptCheckpointError: a header or the index is inconsistent (checked before any read).
    """
    subfolder = request.subfolder
    local = _local_path(request.spec)
    if subfolder is None and local is not None and local.is_dir():
        subfolder = _pipeline_component(local, request.component, request.classes)
    if subfolder is None and local is None:
        # A hub repo named without subfolder may be a pipeline: fetch only this adapter's component.
        try:
            ckpt = _resolve(request, None, components=[request.component])
        except CheckpointNotFoundError:
            ckpt = _resolve(request, None)
    else:
        ckpt = _resolve(request, subfolder)
    if ckpt.components:
        ckpt = ckpt.components.get(request.component) or ckpt.require_single()
    # Check every shard's header against the index before a model is built.
    if ckpt.weight_set is not None:
        check_weight_set(ckpt.weight_set).raise_first()
    return ckpt


def _resolve(
    request: ComponentRequest, subfolder: str | None, components: list[str] | None = None
) -> CheckpointDir:
    return resolve_ckpt_dir(
        request.spec,
        subfolder=subfolder,
        components=components,
        variant=request.variant,
        variant_fallback=request.variant_fallback,
        **{k: v for k, v in request.hub.items() if v is not None},
    )


def _local_path(spec: object) -> Path | None:
    if isinstance(spec, CheckpointDir):
        return spec.path
    path = Path(os.path.expanduser(os.fspath(spec)))  # type: ignore[call-overload]
    return path if path.exists() else None


def _pipeline_component(directory: Path, default: str, classes: Collection[str]) -> str | None:
    present = [c for c in pipeline_components(directory) or [] if (directory / c.name).is_dir()]
    if not present:  # not a pipeline, or one none of whose components is here: the root is the model
        return None
    by_class = [c.name for c in present if c.class_name in classes]
    if by_class:
        return default if default in by_class else by_class[0]
    if any(c.name == default for c in present):
        return default
    raise CheckpointNotFoundError(
        f"this pipeline has no {default!r} component",
        path=directory / "model_index.json",
        fix="pass subfolder= one of: " + ", ".join(c.name for c in present),
    )


def read_config(ckpt: CheckpointDir) -> dict[str, Any]:
    """The ``config.json`` beside the selected weights.

    Raises:
        CheckpointNotFoundError: there is none.
        CorruptCheckpointError: it is not a JSON object.
    """
    path = Path(ckpt.path) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointNotFoundError(
            "no config.json beside the weights; the model cannot be built without it",
            path=path,
            fix="point at the model directory saved by save_pretrained (or pass subfolder=)",
        )
    return read_json_object(path)
