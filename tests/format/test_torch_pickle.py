"""Listing torch zip checkpoints without torch, and refusing pickles that would run code."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import torch

from ckptkit import inspect_checkpoint
from ckptkit.errors import CorruptCheckpointError, UnsafeCheckpointError
from ckptkit.format.torch_pickle import scan_torch_file


class _Evil:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


def test_scan_matches_torch_load(layouts) -> None:
    path = layouts["t5_bin"] / "pytorch_model.bin"
    entries = scan_torch_file(path)
    state_dict = torch.load(path, weights_only=True)
    assert entries is not None and set(entries) == set(state_dict)
    for name, tensor in state_dict.items():
        assert entries[name].shape == tuple(tensor.shape)
        assert entries[name].dtype == str(tensor.dtype).removeprefix("torch.")


def test_wrapped_and_mixed_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "train.ckpt"
    torch.save(
        {"epoch": 3, "state_dict": {"w": torch.zeros(2, 3, dtype=torch.bfloat16), "n": torch.tensor(1)}}, path
    )
    entries = scan_torch_file(path)
    assert entries is not None
    assert entries["state_dict.w"].dtype == "bfloat16" and entries["state_dict.w"].shape == (2, 3)
    assert entries["state_dict.n"].shape == ()


def test_code_in_pickle_is_refused_and_never_runs(tmp_path: Path) -> None:
    sentinel = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "boom": _Evil(sentinel)}, path)
    with pytest.raises(UnsafeCheckpointError, match="system") as info:
        scan_torch_file(path)
    assert str(path) in str(info.value)
    assert not sentinel.exists()


def test_damaged_zip_and_legacy_format(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(3)}, good)
    bad = tmp_path / "bad.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, data[: len(data) // 2] if item.filename.endswith("data.pkl") else data)
    with pytest.raises(CorruptCheckpointError):
        scan_torch_file(bad)
    legacy = tmp_path / "legacy.pt"
    torch.save({"w": torch.zeros(3)}, legacy, _use_new_zipfile_serialization=False)
    assert scan_torch_file(legacy) is None


def test_inspect_counts_torch_files_without_double_counting_tied_storage(layouts, tmp_path: Path) -> None:
    info = inspect_checkpoint(layouts["t5_bin"])
    state_dict = torch.load(layouts["t5_bin"] / "pytorch_model.bin", weights_only=True)
    assert info.tensor_count == len(state_dict)
    assert info.parameter_count == sum(t.numel() for t in state_dict.values())
    unique = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in state_dict.values()}
    assert info.total_bytes == sum(unique.values())
    evil_dir = tmp_path / "evil"
    evil_dir.mkdir()
    torch.save({"boom": _Evil(tmp_path / "ran")}, evil_dir / "pytorch_model.bin")
    evil = inspect_checkpoint(evil_dir)
    assert not evil.ok and evil.problems[0].kind == "UnsafeCheckpointError"
    assert not (tmp_path / "ran").exists()
