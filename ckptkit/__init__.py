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
    "CheckpointDir": "ckptkit.format.checkpoint",
    "CheckpointInfo": "ckptkit.check.inspect",
    "inspect_checkpoint": "ckptkit.check.inspect",
    "MemoryPlan": "ckptkit.placement.memory",
    "plan_memory": "ckptkit.placement.memory",
    "VerifyReport": "ckptkit.check.verify",
    "verify_checkpoint": "ckptkit.check.verify",
    "write_manifest": "ckptkit.check.checksums",
    "read_manifest": "ckptkit.check.checksums",
    "FileCheck": "ckptkit.check.verify",
    "StrategyEstimate": "ckptkit.placement.memory",
    "find_blocks": "ckptkit.placement.memory",
    "DistributedLoadResult": "ckptkit.distributed.load",
    "allocate_meta_model": "ckptkit.distributed.allocate",
    "load_sharded_distributed": "ckptkit.distributed.load",
    "save_sharded": "ckptkit.distributed.save",
    "dcp_to_safetensors": "ckptkit.distributed.dcp",
    "safetensors_to_dcp": "ckptkit.distributed.dcp",
    "LoadResult": "ckptkit.io.module_fill",
    "load_sharded": "ckptkit.load.sharded",
    "parse_size": "ckptkit.format.sizes",
    "DevicePlan": "ckptkit.placement.device_map",
    "PlacementResult": "ckptkit.placement.dispatch",
    "infer_device_map": "ckptkit.placement.dispatch",
    "load_with_device_map": "ckptkit.placement.dispatch",
    "plan_device_map": "ckptkit.placement.device_map",
    "materialize": "ckptkit.save.materialize",
    "resave": "ckptkit.save.resave",
    "resolve_ckpt_dir": "ckptkit.resolve.resolve",
    "cache_dirs": "ckptkit.resolve.hub_spec",
    "AmbiguousCheckpointError": "ckptkit.errors",
    "CheckpointNotFoundError": "ckptkit.errors",
    "CkptError": "ckptkit.errors",
    "CkptWarning": "ckptkit.errors",
    "CorruptCheckpointError": "ckptkit.errors",
    "DestinationExistsError": "ckptkit.errors",
    "DiskFullError": "ckptkit.errors",
    "HubUnreachableError": "ckptkit.errors",
    "IncompleteCheckpointError": "ckptkit.errors",
    "ModelMismatchError": "ckptkit.errors",
    "UnsafeCheckpointError": "ckptkit.errors",
    "VariantNotFoundError": "ckptkit.errors",
}

__all__ = [*sorted(_EXPORTS), "__version__"]

if TYPE_CHECKING:
    from ckptkit.check.checksums import read_manifest, write_manifest
    from ckptkit.check.inspect import CheckpointInfo, inspect_checkpoint
    from ckptkit.check.verify import FileCheck, VerifyReport, verify_checkpoint
    from ckptkit.distributed.allocate import allocate_meta_model
    from ckptkit.distributed.dcp import dcp_to_safetensors, safetensors_to_dcp
    from ckptkit.distributed.load import DistributedLoadResult, load_sharded_distributed
    from ckptkit.distributed.save import save_sharded
    from ckptkit.errors import (
        AmbiguousCheckpointError,
        CheckpointNotFoundError,
        CkptError,
        CkptWarning,
        CorruptCheckpointError,
        DestinationExistsError,
        DiskFullError,
        HubUnreachableError,
        IncompleteCheckpointError,
        ModelMismatchError,
        UnsafeCheckpointError,
        VariantNotFoundError,
    )
    from ckptkit.format.checkpoint import CheckpointDir
    from ckptkit.format.sizes import parse_size
    from ckptkit.io.module_fill import LoadResult
    from ckptkit.load.sharded import load_sharded
    from ckptkit.placement.device_map import DevicePlan, plan_device_map
    from ckptkit.placement.dispatch import PlacementResult, infer_device_map, load_with_device_map
    from ckptkit.placement.memory import MemoryPlan, StrategyEstimate, find_blocks, plan_memory
    from ckptkit.resolve.hub_spec import cache_dirs
    from ckptkit.resolve.resolve import resolve_ckpt_dir
    from ckptkit.save.materialize import materialize
    from ckptkit.save.resave import resave


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ckptkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
