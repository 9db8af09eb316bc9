"""Loading and saving on ``torch.distributed``: each rank reads and writes only its own bytes.

``load_sharded_distributed`` fills a module whose parameters are DTensors (FSDP2 ``fully_shard``,
``distribute_tensor``) from a safetensors checkpoint, every rank reading only the byte ranges of its
local shards. ``save_sharded`` writes such a module as an ordinary sharded safetensors checkpoint,
every rank writing its shards straight into the final files. ``dcp_to_safetensors`` and
``safetensors_to_dcp`` convert between ``torch.distributed.checkpoint`` directories and safetensors
checkpoints through DCP's own readers, writers and planners.
"""

from ckptkit.distributed.allocate import Allocation, allocate_meta_model
from ckptkit.distributed.dcp import dcp_to_safetensors, safetensors_to_dcp
from ckptkit.distributed.load import DistributedLoadResult, has_dtensor_params, load_sharded_distributed
from ckptkit.distributed.save import SaveStats, last_save_stats, save_sharded

__all__ = [
    "Allocation",
    "DistributedLoadResult",
    "SaveStats",
    "allocate_meta_model",
    "dcp_to_safetensors",
    "has_dtensor_params",
    "last_save_stats",
    "load_sharded_distributed",
    "safetensors_to_dcp",
    "save_sharded",
]
