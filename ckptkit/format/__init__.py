"""The bottom floor: safetensors headers, index files, file names, weight sets, sizes, dtypes.

Pure Python; importing it never imports torch.
"""

from ckptkit.format.components import Component, read_json_object, read_model_index
from ckptkit.format.dtypes import DTYPES, DtypeInfo, canonical_dtype, variant_dtype
from ckptkit.format.index import ShardIndex, check_shard_name, read_index
from ckptkit.format.layout import Selection, WeightSet, discover_weight_sets, select_weight_set
from ckptkit.format.naming import (
    IndexFileName,
    WeightFileName,
    index_filename,
    parse_index_filename,
    parse_weight_filename,
    weights_filename,
)
from ckptkit.format.safetensors_header import SafetensorsHeader, TensorInfo, read_header
from ckptkit.format.sizes import format_size, parse_size

__all__ = [
    "DTYPES",
    "Component",
    "DtypeInfo",
    "IndexFileName",
    "SafetensorsHeader",
    "Selection",
    "ShardIndex",
    "TensorInfo",
    "WeightFileName",
    "WeightSet",
    "canonical_dtype",
    "check_shard_name",
    "discover_weight_sets",
    "format_size",
    "index_filename",
    "parse_index_filename",
    "parse_size",
    "parse_weight_filename",
    "read_header",
    "read_index",
    "read_json_object",
    "read_model_index",
    "select_weight_set",
    "variant_dtype",
    "weights_filename",
]
