"""ckptkit: model checkpoint directories made boring.

Public names are imported on first use, so ``import ckptkit`` stays light and the torch-free
parts (``inspect_checkpoint``, ``verify_checkpoint``, :mod:`ckptkit.format`) never load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "CheckpointDir": "ckptkit.checkpoint",
    "CheckpointInfo": "ckptkit.inspect",
    "inspect_checkpoint": "ckptkit.inspect",
    "MemoryPlan": "ckptkit.plan",
    "plan_memory": "ckptkit.plan",
    "VerifyReport": "ckptkit.verify",
    "verify_checkpoint": "ckptkit.verify",
    "write_manifest": "ckptkit.checksums",
    "LoadResult": "ckptkit.load",
    "load_sharded": "ckptkit.load",
    "parse_size": "ckptkit.format.sizes",
    "DevicePlan": "ckptkit.placement_plan",
    "PlacementResult": "ckptkit.placement",
    "infer_device_map": "ckptkit.placement",
    "load_with_device_map": "ckptkit.placement",
    "plan_device_map": "ckptkit.placement_plan",
    "materialize": "ckptkit.materialize",
    "resave": "ckptkit.resave",
    "resolve_ckpt_dir": "ckptkit.resolve",
    "AmbiguousCheckpointError": "ckptkit.errors",
    "CheckpointNotFoundError": "ckptkit.errors",
    "CkptError": "ckptkit.errors",
    "CkptWarning": "ckptkit.errors",
    "CorruptCheckpointError": "ckptkit.errors",
    "DestinationExistsError": "ckptkit.errors",
    "DiskFullError": "ckptkit.errors",
    "IncompleteCheckpointError": "ckptkit.errors",
    "ModelMismatchError": "ckptkit.errors",
    "UnsafeCheckpointError": "ckptkit.errors",
    "VariantNotFoundError": "ckptkit.errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:
    from ckptkit.checkpoint import CheckpointDir
    from ckptkit.checksums import write_manifest
    from ckptkit.errors import (
        AmbiguousCheckpointError,
        CheckpointNotFoundError,
        CkptError,
        CkptWarning,
        CorruptCheckpointError,
        DestinationExistsError,
        DiskFullError,
        IncompleteCheckpointError,
        ModelMismatchError,
        UnsafeCheckpointError,
        VariantNotFoundError,
    )
    from ckptkit.format.sizes import parse_size
    from ckptkit.inspect import CheckpointInfo, inspect_checkpoint
    from ckptkit.load import LoadResult, load_sharded
    from ckptkit.materialize import materialize
    from ckptkit.placement import PlacementResult, infer_device_map, load_with_device_map
    from ckptkit.placement_plan import DevicePlan, plan_device_map
    from ckptkit.plan import MemoryPlan, plan_memory
    from ckptkit.resave import resave
    from ckptkit.resolve import resolve_ckpt_dir
    from ckptkit.verify import VerifyReport, verify_checkpoint


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ckptkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
