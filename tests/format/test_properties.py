"""Property tests: the parsers let only CkptError escape, and valid headers round-trip."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from ckptkit.errors import CkptError
from ckptkit.format.index import read_index
from ckptkit.format.safetensors_header import parse_header_bytes, read_header

SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(raw=st.binary(max_size=512), extra=st.integers(min_value=0, max_value=2**62))
def test_arbitrary_header_bytes_only_raise_ckpt_errors(raw: bytes, extra: int) -> None:
    try:
        parse_header_bytes(raw, path="x.safetensors", file_size=8 + len(raw) + extra)
    except CkptError:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
tensor_entry = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F99", 3]),
        "shape": st.lists(st.integers(min_value=-2, max_value=5), max_size=3),
        "data_offsets": st.lists(st.integers(min_value=-4, max_value=64), min_size=0, max_size=3),
    }
)


@SETTINGS
@given(
    header=st.dictionaries(st.text(max_size=8), tensor_entry | json_values, max_size=5),
    data=st.integers(0, 128),
)
def test_structured_garbage_only_raises_ckpt_errors(header: dict, data: int) -> None:
    raw = json.dumps(header).encode()
    try:
        parse_header_bytes(raw, path="x.safetensors", file_size=8 + len(raw) + data)
    except CkptError:
        pass


@SETTINGS
@given(content=json_values | st.fixed_dictionaries({"weight_map": json_values, "metadata": json_values}))
def test_index_json_only_raises_ckpt_errors(tmp_path: Path, content: object) -> None:
    path = tmp_path / "model.safetensors.index.json"
    path.write_text(json.dumps(content))
    try:
        index = read_index(path)
    except CkptError:
        return
    assert all(isinstance(v, str) for v in index.weight_map.values())


DTYPES = {
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "U8": torch.uint8,
}


@SETTINGS
@given(
    specs=st.dictionaries(
        st.text(alphabet="abcdefgh.0123456789_", min_size=1, max_size=12),
        st.tuples(st.sampled_from(sorted(DTYPES)), st.lists(st.integers(0, 6), max_size=3)),
        min_size=1,
        max_size=6,
    )
)
def test_valid_files_round_trip_against_safetensors(tmp_path: Path, specs: dict) -> None:
    tensors = {name: torch.zeros(shape, dtype=DTYPES[code]) for name, (code, shape) in specs.items()}
    path = tmp_path / "rt.safetensors"
    save_file(tensors, path)
    header = read_header(path)
    with safe_open(path, "pt") as handle:
        assert set(handle.keys()) == set(header.tensors)
        for name in handle.keys():  # noqa: SIM118 - safe_open is no Mapping
            info = header.tensors[name]
            assert list(info.shape) == handle.get_slice(name).get_shape()
            assert info.dtype == handle.get_slice(name).get_dtype()
            assert info.nbytes == math.prod(info.shape) * tensors[name].element_size()
    # and the same bytes rebuilt by hand are still accepted
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    assert (
        parse_header_bytes(raw[8 : 8 + length], path=path, file_size=len(raw)).tensors.keys()
        == header.tensors.keys()
    )
