"""A corpus of malformed checkpoints, one builder per case, for the reliability tests.

Each builder writes a broken checkpoint under a directory and returns a :class:`Case`: what to
open, the error a loader must raise, and the file name the message must contain.
"""

from __future__ import annotations

import json
import os
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ckptkit.errors import (
    CheckpointNotFoundError,
    CkptError,
    CorruptCheckpointError,
    IncompleteCheckpointError,
    UnsafeCheckpointError,
)


@dataclass
class Case:
    spec: Path
    error: type[CkptError]
    names: str
    sentinel: Path | None = None


def _raw(path: Path, header: object, data: bytes = b"", raw: bytes | None = None) -> Path:
    blob = raw if raw is not None else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def _single(root: Path, header: object, data: bytes = b"", raw: bytes | None = None) -> Case:
    root.mkdir(parents=True, exist_ok=True)
    path = _raw(root / "model.safetensors", header, data, raw)
    return Case(root, CorruptCheckpointError, path.name)


T = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def _sharded(root: Path) -> tuple[Path, Path, Path]:
    root.mkdir(parents=True, exist_ok=True)
    a, b = root / "model-00001-of-00002.safetensors", root / "model-00002-of-00002.safetensors"
    save_file({"x": torch.ones(2), "y": torch.ones(3)}, a)
    save_file({"z": torch.ones(4)}, b)
    index = root / "model.safetensors.index.json"
    index.write_text(
        json.dumps({"metadata": {"total_size": 36}, "weight_map": {"x": a.name, "y": a.name, "z": b.name}})
    )
    return a, b, index


def _index_with(root: Path, weight_map: dict) -> Case:
    _sharded(root)
    (root / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return Case(root, UnsafeCheckpointError, "model.safetensors.index.json")


class _Evil:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def case_truncated_header(root: Path) -> Case:
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"\x10\0\0")
    return Case(root, CorruptCheckpointError, "model.safetensors")


def case_empty_weights_file(root: Path) -> Case:
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(b"")
    return Case(root, CorruptCheckpointError, "model.safetensors")


def case_truncated_data(root: Path) -> Case:
    return _single(root, {"t": T}, b"\0" * 5)


def case_header_longer_than_file(root: Path) -> Case:
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(struct.pack("<Q", 4096) + b'{"t":')
    return Case(root, CorruptCheckpointError, "model.safetensors")


def case_header_length_2_pow_60(root: Path) -> Case:
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(struct.pack("<Q", 2**60) + b"{}")
    return Case(root, CorruptCheckpointError, "model.safetensors")


def case_header_not_utf8(root: Path) -> Case:
    return _single(root, None, raw=b'{"\xff\xfe": 1}')


def case_header_not_json(root: Path) -> Case:
    return _single(root, None, raw=b"{this is not json")


def case_header_not_object(root: Path) -> Case:
    return _single(root, [1, 2, 3])


def case_unknown_dtype(root: Path) -> Case:
    return _single(root, {"t": {**T, "dtype": "Q7"}}, b"\0" * 8)


def case_shape_does_not_match_span(root: Path) -> Case:
    return _single(root, {"t": {**T, "shape": [3]}}, b"\0" * 8)


def case_negative_offsets(root: Path) -> Case:
    return _single(root, {"t": {**T, "data_offsets": [-8, 0]}}, b"\0" * 8)


def case_overlapping_offsets(root: Path) -> Case:
    return _single(root, {"a": T, "b": {**T, "data_offsets": [4, 12]}}, b"\0" * 12)


def case_offsets_out_of_bounds(root: Path) -> Case:
    return _single(root, {"t": {**T, "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8)


def case_hole_between_tensors(root: Path) -> Case:
    shape1 = {"dtype": "F32", "shape": [1]}
    return _single(
        root, {"a": {**shape1, "data_offsets": [0, 4]}, "b": {**shape1, "data_offsets": [8, 12]}}, b"\0" * 12
    )


def case_duplicate_keys_in_header(root: Path) -> Case:
    raw = b'{"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}'
    return _single(root, None, b"\0" * 8, raw=raw)


def case_giant_shape(root: Path) -> Case:
    return _single(root, {"t": {**T, "shape": [2**62, 2**62, 2**62]}}, b"\0" * 8)


def case_bad_offsets_arity(root: Path) -> Case:
    return _single(root, {"t": {**T, "data_offsets": [0, 4, 8]}}, b"\0" * 8)


def case_bad_metadata(root: Path) -> Case:
    return _single(root, {"__metadata__": {"format": ["pt"]}, "t": T}, b"\0" * 8)


def case_index_names_missing_shard(root: Path) -> Case:
    _, b, _ = _sharded(root)
    b.unlink()
    return Case(root, IncompleteCheckpointError, b.name)


def case_index_absolute_path(root: Path) -> Case:
    return _index_with(root, {"x": "/etc/passwd"})


def case_index_traversal(root: Path) -> Case:
    return _index_with(root, {"x": "../../secrets.safetensors"})


def case_index_not_json(root: Path) -> Case:
    _, _, index = _sharded(root)
    index.write_text("{weight_map:")
    return Case(root, CorruptCheckpointError, index.name)


def case_index_without_weight_map(root: Path) -> Case:
    _, _, index = _sharded(root)
    index.write_text(json.dumps({"metadata": {"total_size": 1}}))
    return Case(root, CorruptCheckpointError, index.name)


def case_index_duplicate_keys(root: Path) -> Case:
    a, b, index = _sharded(root)
    index.write_text(
        f'{{"weight_map": {{"x": "{a.name}", "x": "{b.name}", "y": "{a.name}", "z": "{b.name}"}}}}'
    )
    return Case(root, CorruptCheckpointError, index.name)


def case_key_in_two_shards(root: Path) -> Case:
    _, b, _ = _sharded(root)
    save_file({"z": torch.ones(4), "x": torch.ones(2)}, b)
    return Case(root, CorruptCheckpointError, b.name)


def case_key_absent_from_its_shard(root: Path) -> Case:
    a, b, index = _sharded(root)
    index.write_text(json.dumps({"weight_map": {"x": a.name, "y": a.name, "z": a.name, "w": b.name}}))
    return Case(root, CorruptCheckpointError, index.name)


def case_dangling_snapshot_link(root: Path) -> Case:
    snapshot = root / "models--org--name" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (root / "models--org--name" / "blobs").mkdir()
    (snapshot / "model.safetensors").symlink_to("../../blobs/" + "0" * 64)
    return Case(snapshot, IncompleteCheckpointError, "model.safetensors")


def case_incomplete_blob(root: Path) -> Case:
    repo = root / "models--org--name"
    snapshot = repo / "snapshots" / ("b" * 40)
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    (repo / "blobs" / ("1" * 64 + ".incomplete")).write_bytes(b"\0" * 10)
    (snapshot / "model.safetensors").symlink_to("../../blobs/" + "1" * 64)
    return Case(snapshot, IncompleteCheckpointError, "model.safetensors")


def case_empty_directory(root: Path) -> Case:
    root.mkdir(parents=True)
    return Case(root, CheckpointNotFoundError, root.name)


def case_code_running_pickle(root: Path) -> Case:
    root.mkdir(parents=True)
    sentinel = root.parent / f"{root.name}-ran"
    torch.save({"w": torch.zeros(2), "boom": _Evil(sentinel)}, root / "pytorch_model.bin")
    return Case(root, UnsafeCheckpointError, "pytorch_model.bin", sentinel=sentinel)


def case_zip_torch_file_with_bad_entry(root: Path) -> Case:
    root.mkdir(parents=True)
    good = root.parent / f"{root.name}-good.pt"
    torch.save({"w": torch.zeros(64)}, good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(root / "pytorch_model.bin", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("data.pkl"):
                data = data[: len(data) // 2]
            dst.writestr(item, data)
    good.unlink()
    return Case(root, CorruptCheckpointError, "pytorch_model.bin")


def case_zip_torch_file_with_short_storage(root: Path) -> Case:
    root.mkdir(parents=True)
    good = root.parent / f"{root.name}-good.pt"
    torch.save({"w": torch.zeros(64)}, good)
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(root / "pytorch_model.bin", "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data[:10] if "/data/" in item.filename else data)
    good.unlink()
    return Case(root, CorruptCheckpointError, "pytorch_model.bin")


def case_truncated_torch_file(root: Path) -> Case:
    root.mkdir(parents=True)
    path = root / "pytorch_model.bin"
    torch.save({"w": torch.zeros(4096)}, path)
    path.write_bytes(path.read_bytes()[:2000])
    return Case(root, CorruptCheckpointError, "pytorch_model.bin")


CASES: dict[str, Callable[[Path], Case]] = {
    name.removeprefix("case_"): fn for name, fn in sorted(globals().items()) if name.startswith("case_")
}
