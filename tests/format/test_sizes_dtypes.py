from __future__ import annotations

import pytest
import torch
from huggingface_hub.serialization._base import parse_size_to_int

from ckptkit.format.dtypes import DTYPES, canonical_dtype, variant_dtype
from ckptkit.format.sizes import format_size, parse_size


@pytest.mark.parametrize("text", ["10GB", "500MB", "100KB", "1.5GB", "3TB", "5 GB"])
def test_decimal_units_agree_with_huggingface_hub(text) -> None:
    assert parse_size(text) == parse_size_to_int(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("10GiB", 10 * 2**30), ("500MiB", 500 * 2**20), ("1kib", 1024), ("64 MiB", 64 * 2**20), (12, 12)],
)
def test_binary_units_and_ints(text, value) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("bad", ["10XB", "", "GB", "-1GB", -5, None, 1.5, True])
def test_bad_sizes(bad) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)


def test_format_size() -> None:
    assert format_size(512) == "512 B"
    assert format_size(1536) == "1.5 KiB"
    assert format_size(3 * 2**30) == "3.0 GiB"


def test_dtype_table_matches_torch() -> None:
    for info in DTYPES.values():
        dtype = getattr(torch, info.name, None)
        if dtype is None:
            continue
        if info.bits >= 8:
            assert torch.empty((), dtype=dtype).element_size() * 8 == info.bits, info.code


@pytest.mark.parametrize(
    ("value", "name"),
    [
        ("fp16", "float16"),
        ("float16", "float16"),
        ("bf16", "bfloat16"),
        ("fp32", "float32"),
        (torch.bfloat16, "bfloat16"),
        ("fp8_e4m3fn", "float8_e4m3fn"),
        ("fp8_e5m2", "float8_e5m2"),
    ],
)
def test_canonical_dtype(value, name) -> None:
    assert canonical_dtype(value) == name


def test_unknown_dtype_and_variant_dtypes() -> None:
    with pytest.raises(ValueError, match="unknown dtype"):
        canonical_dtype("fp13")
    assert variant_dtype("fp16") == "float16"
    assert variant_dtype("ema") is None
    assert variant_dtype(None) is None


def test_inspect_plan_memory_and_plan_device_map_agree_on_sub_byte_tensors(tmp_path):
    import json
    import struct

    from ckptkit import inspect_checkpoint, plan_device_map, plan_memory

    # An F4 tensor of 4x10 values is 20 bytes (two values per byte), a BF16 one of 4 values 8.
    header = {
        "packed": {"dtype": "F4", "shape": [4, 10], "data_offsets": [0, 20]},
        "plain": {"dtype": "BF16", "shape": [4], "data_offsets": [20, 28]},
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(28))
    assert inspect_checkpoint(tmp_path).total_bytes == 28
    assert plan_memory(tmp_path, device_memory="1GiB").weights_bytes == 28
    assert sum(plan_device_map(tmp_path, max_memory={"cpu": "1GiB"}).bytes_per_device.values()) == 28
