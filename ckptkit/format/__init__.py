"""The bottom floor: safetensors headers, index files, file names, weight sets, sizes, dtypes.

Pure Python; importing it never imports torch. ``__all__`` holds what a user reads checkpoints
with (headers, indexes, weight sets); the other modules here are ckptkit's own plumbing, importable
from their modules (``ckptkit.format.naming``, ...) and documented in the format reference.

The names of ``__all__`` are loaded on first use, as those of ``ckptkit`` are: importing one module
of this package (``ckptkit.format.sizes``, as the CLI does to start) loads only that module.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SafetensorsHeader": "ckptkit.format.safetensors_header",
    "Selection": "ckptkit.format.layout",
    "ShardIndex": "ckptkit.format.index",
    "TensorInfo": "ckptkit.format.safetensors_header",
    "WeightSet": "ckptkit.format.layout",
    "canonical_dtype": "ckptkit.format.dtypes",
    "check_weight_set": "ckptkit.format.validate",
    "discover_weight_sets": "ckptkit.format.layout",
    "read_header": "ckptkit.format.safetensors_header",
    "read_index": "ckptkit.format.index",
    "select_weight_set": "ckptkit.format.layout",
}

__all__ = [
    "SafetensorsHeader",
    "Selection",
    "ShardIndex",
    "TensorInfo",
    "WeightSet",
    "canonical_dtype",
    "check_weight_set",
    "discover_weight_sets",
    "read_header",
    "read_index",
    "select_weight_set",
]

if TYPE_CHECKING:
    from ckptkit.format.dtypes import canonical_dtype
    from ckptkit.format.index import ShardIndex, read_index
    from ckptkit.format.layout import Selection, WeightSet, discover_weight_sets, select_weight_set
    from ckptkit.format.safetensors_header import SafetensorsHeader, TensorInfo, read_header
    from ckptkit.format.validate import check_weight_set

# Names this package exported before its __all__ was trimmed: still served from their modules,
# with a DeprecationWarning, for one release.
_MOVED = {
    "DTYPES": "ckptkit.format.dtypes",
    "DtypeInfo": "ckptkit.format.dtypes",
    "variant_dtype": "ckptkit.format.dtypes",
    "Component": "ckptkit.format.components",
    "read_json_object": "ckptkit.format.components",
    "read_model_index": "ckptkit.format.components",
    "check_shard_name": "ckptkit.format.index",
    "IndexFileName": "ckptkit.format.naming",
    "WeightFileName": "ckptkit.format.naming",
    "index_filename": "ckptkit.format.naming",
    "parse_index_filename": "ckptkit.format.naming",
    "parse_weight_filename": "ckptkit.format.naming",
    "weights_filename": "ckptkit.format.naming",
    "format_size": "ckptkit.format.sizes",
    "parse_size": "ckptkit.format.sizes",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'ckptkit.format' has no attribute {name!r}")
    warnings.warn(
        f"ckptkit.format.{name} is deprecated; import it from {module}",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
