"""The shard layout of a safetensors checkpoint, computed from names, dtypes and shapes alone.

Every rank computes the same layout from the same list of tensors, so each one knows where every
byte goes before any is written. The rules are those of transformers / huggingface_hub
``split_state_dict_into_shards_factory``: tensors are taken in key order and a new shard starts when
the next tensor would push the current one past ``max_shard_size``; a tensor larger than that gets a
shard of its own. Inside a file, tensors are ordered as safetensors orders them (dtype alignment
descending, then name) and the JSON header is padded with spaces to a multiple of 8 bytes. The
splitting, header and index rules are those of :mod:`ckptkit.io.writer` (the streaming shard writer),
used here so that both writers lay out files identically.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from ckptkit.format.dtypes import DTYPES
from ckptkit.format.naming import index_filename
from ckptkit.format.safetensors_header import TensorInfo
from ckptkit.format.sizes import parse_size
from ckptkit.io.writer import PlannedShard, PlannedTensor, build_header, plan_shards

__all__ = ["ShardFile", "ShardLayout", "TensorSpec", "plan_layout"]


@dataclass(frozen=True)
class TensorSpec:
    """What the layout needs to know about one tensor: its key, safetensors dtype code and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        nbytes = DTYPES[self.dtype].nbytes(math.prod(self.shape))
        if nbytes is None:
            raise ValueError(
                f"tensor {self.name!r}: {self.dtype} elements of shape {self.shape} fill no whole byte"
            )
        return nbytes


@dataclass
class ShardFile:
    """One output file: its name, the header bytes to put first, and where each tensor lies.

    Attributes:
        filename: the file name (``model-00001-of-00002.safetensors``).
        header: the 8-byte length and the padded JSON header.
        tensors: key -> :class:`~ckptkit.format.TensorInfo` (offsets relative to the data buffer).
    """

    filename: str
    header: bytes
    tensors: dict[str, TensorInfo]

    @property
    def data_start(self) -> int:
        return len(self.header)

    @property
    def file_size(self) -> int:
        return self.data_start + max((t.end for t in self.tensors.values()), default=0)

    def file_offset(self, name: str) -> int:
        """Absolute offset in the file of a tensor's first byte."""
        return self.data_start + self.tensors[name].begin


@dataclass
class ShardLayout:
    """Every file of a checkpoint to write, and its index.

    Attributes:
        files: the weight files, in shard order.
        index_name: the index file name, or ``None`` for a single file.
        total_size: bytes of tensor data over all files (the index's ``metadata.total_size``).
        location: key -> the :class:`ShardFile` that holds it.
    """

    files: list[ShardFile]
    index_name: str | None
    total_size: int
    location: dict[str, ShardFile] = field(default_factory=dict)

    def index_json(self) -> dict[str, object]:
        """The index as transformers writes it: ``metadata.total_size`` and ``weight_map``."""
        weight_map = {name: shard.filename for shard in self.files for name in shard.tensors}
        return {"metadata": {"total_size": self.total_size}, "weight_map": dict(sorted(weight_map.items()))}

    def index_bytes(self) -> bytes:
        """The index file's bytes, as :func:`ckptkit.io.writer.index_bytes` writes them."""
        return (json.dumps(self.index_json(), indent=2, sort_keys=True) + "\n").encode("utf-8")


def plan_layout(
    tensors: list[TensorSpec],
    *,
    weights_name: str = "model",
    max_shard_size: int | str | None = "10GB",
    variant: str | None = None,
    metadata: dict[str, str] | None = None,
) -> ShardLayout:
    """Split ``tensors`` into safetensors shards and compute every header.

    Args:
        tensors: the tensors, in the key order to shard them in.
        weights_name: ``"model"`` (transformers) or ``"diffusion_pytorch_model"`` (diffusers).
        max_shard_size: a size (``"10GB"``, ``"500MiB"``, bytes), or ``None`` for one file.
        variant: the variant in the file names (``"fp16"``), current naming scheme.
        metadata: the ``__metadata__`` of every file; ``{"format": "pt"}`` is always set.

    Returns:
        The :class:`ShardLayout`.

    Raises:
        ValueError: for a duplicate key or a size that cannot be parsed.

    Example:
        >>> layout = plan_layout([TensorSpec("a", "BF16", (4, 4)), TensorSpec("b", "F32", (8,))], max_shard_size=40)
        >>> [f.filename for f in layout.files], layout.index_name
        (['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'], 'model.safetensors.index.json')
    """
    limit = None if max_shard_size is None else parse_size(max_shard_size)
    seen: set[str] = set()
    planned = []
    for spec in tensors:
        if spec.name in seen:
            raise ValueError(f"tensor {spec.name!r} is listed twice")
        seen.add(spec.name)
        planned.append(PlannedTensor(spec.name, spec.dtype, spec.shape, spec.nbytes))
    shards = plan_shards(planned, max_shard_size=limit, weights_name=weights_name, variant=variant)
    file_metadata = {**(metadata or {}), "format": "pt"}
    files = [_shard_file(shard, file_metadata) for shard in shards]
    index_name = index_filename(weights_name, variant=variant) if len(shards) > 1 else None
    layout = ShardLayout(files=files, index_name=index_name, total_size=sum(s.nbytes for s in shards))
    layout.location = {name: shard for shard in files for name in shard.tensors}
    return layout


def _shard_file(shard: PlannedShard, metadata: dict[str, str]) -> ShardFile:
    header, ordered = build_header(shard.tensors, metadata)
    infos: dict[str, TensorInfo] = {}
    offset = 0
    for tensor in ordered:
        infos[tensor.name] = TensorInfo(
            tensor.name, tensor.dtype, tensor.shape, offset, offset + tensor.nbytes
        )
        offset += tensor.nbytes
    return ShardFile(filename=shard.filename, header=header, tensors=infos)
