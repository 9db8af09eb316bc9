"""Index files: parsing, refusal of escaping names, and checks against the shard headers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ckptkit.errors import CorruptCheckpointError, IncompleteCheckpointError, UnsafeCheckpointError
from ckptkit.format.index import read_index
from ckptkit.format.layout import discover_weight_sets
from ckptkit.format.validate import check_weight_set


def _index(path: Path, weight_map: dict, total_size: int | None = None) -> Path:
    meta = {} if total_size is None else {"total_size": total_size}
    path.write_text(json.dumps({"metadata": meta, "weight_map": weight_map}))
    return path


def test_reads_what_transformers_wrote(layouts) -> None:
    index = read_index(layouts["t5_sharded"] / "model.safetensors.index.json")
    assert index.shard_names == sorted(p.name for p in layouts["t5_sharded"].glob("model-*.safetensors"))
    assert index.total_size is not None and index.total_size > 0
    assert index.missing_shards() == []


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../outside.safetensors", "a/../../b.safetensors", "C:\\x.safetensors"]
)
def test_escaping_shard_names_are_always_refused(tmp_path: Path, name: str) -> None:
    path = _index(tmp_path / "model.safetensors.index.json", {"w": name})
    with pytest.raises(UnsafeCheckpointError) as info:
        read_index(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("model-00001-of-00002.safetensors", None),
        ("sub/model.safetensors", None),
        ("", UnsafeCheckpointError),
        ("..", UnsafeCheckpointError),
        (".", CorruptCheckpointError),
        ("a\x00b.safetensors", UnsafeCheckpointError),
        ("C:x.safetensors", UnsafeCheckpointError),
        ("\\\\server\\share\\x.safetensors", UnsafeCheckpointError),
        ("sub/", CorruptCheckpointError),
        ("sub//x.safetensors", CorruptCheckpointError),
    ],
)
def test_shard_names_plain_or_judged(tmp_path: Path, name: str, refused: type[Exception] | None) -> None:
    # A plain file name is accepted at a glance; anything with a separator, drive, NUL or dots is
    # judged in full, with the same outcome as before the glance existed.
    path = _index(tmp_path / "model.safetensors.index.json", {"w": name})
    if refused is None:
        assert read_index(path).shard_names == [name]
    else:
        with pytest.raises(refused):
            read_index(path)


def test_index_with_a_byte_order_mark_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors.index.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"weight_map": {"w": "a.safetensors"}}).encode())
    with pytest.raises(CorruptCheckpointError, match="BOM"):
        read_index(path)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("{", "not valid JSON"),
        ("[]", "weight_map"),
        ('{"metadata": {}}', "weight_map"),
        ('{"weight_map": {"a": 3}}', "not a file name"),
        ('{"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}}', "twice"),
        ('{"weight_map": {}, "metadata": [1]}', "metadata"),
    ],
)
def test_malformed_index(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(content)
    with pytest.raises(CorruptCheckpointError, match=match):
        read_index(path)


def test_missing_index_file(tmp_path: Path) -> None:
    with pytest.raises(IncompleteCheckpointError):
        read_index(tmp_path / "model.safetensors.index.json")


def _two_shards(tmp_path: Path) -> tuple[Path, Path]:
    a, b = tmp_path / "model-00001-of-00002.safetensors", tmp_path / "model-00002-of-00002.safetensors"
    save_file({"x": torch.ones(2), "y": torch.ones(3)}, a)
    save_file({"z": torch.ones(4)}, b)
    return a, b


def _check(tmp_path: Path):
    (weight_set,) = discover_weight_sets(tmp_path)
    return check_weight_set(weight_set)


def test_consistent_index_passes(tmp_path: Path) -> None:
    a, b = _two_shards(tmp_path)
    _index(tmp_path / "model.safetensors.index.json", {"x": a.name, "y": a.name, "z": b.name}, 36)
    check = _check(tmp_path)
    assert check.ok and check.warnings == []


def test_missing_shard_is_incomplete(tmp_path: Path) -> None:
    a, b = _two_shards(tmp_path)
    _index(tmp_path / "model.safetensors.index.json", {"x": a.name, "y": a.name, "z": b.name})
    b.unlink()
    check = _check(tmp_path)
    assert isinstance(check.errors[0], IncompleteCheckpointError)
    assert b.name in str(check.errors[0]) and "model.safetensors.index.json" in str(check.errors[0])


def test_key_absent_from_its_shard(tmp_path: Path) -> None:
    a, b = _two_shards(tmp_path)
    _index(tmp_path / "model.safetensors.index.json", {"x": a.name, "y": a.name, "z": a.name})
    check = _check(tmp_path)
    assert any(isinstance(e, CorruptCheckpointError) and "'z'" in str(e) for e in check.errors)
    assert any(b.name in w and "does not list" in w for w in check.warnings)


def test_key_in_two_shards(tmp_path: Path) -> None:
    a, b = _two_shards(tmp_path)
    save_file({"z": torch.ones(4), "x": torch.ones(2)}, b)
    _index(tmp_path / "model.safetensors.index.json", {"x": a.name, "y": a.name, "z": b.name})
    errors = _check(tmp_path).errors
    assert any("two shards" in str(e) for e in errors)


def test_total_size_lie_and_unlisted_keys_are_warnings(tmp_path: Path) -> None:
    a, b = _two_shards(tmp_path)
    _index(tmp_path / "model.safetensors.index.json", {"x": a.name, "z": b.name}, 999)
    check = _check(tmp_path)
    assert check.ok
    assert any("total_size says 999" in w for w in check.warnings)
    assert any("not in the index" in w and "'y'" in w for w in check.warnings)


def test_strict_json_takes_a_bytearray_as_json_loads_does() -> None:
    from ckptkit.format.strict_json import DuplicateKeyError, loads_strict

    assert loads_strict(bytearray(b'{"a": 1}')) == {"a": 1}
    with pytest.raises(DuplicateKeyError):
        loads_strict(bytearray(b'{"a": 1, "a": 2}'))
