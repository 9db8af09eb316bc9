"""The torch-free planning view: budgets, header sizes, and no torch import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckptkit.errors import CheckpointNotFoundError
from ckptkit.placement.device_map import (
    checkpoint_tensors,
    clean_device_map,
    expand_device_map,
    normalize_max_memory,
    parse_max_memory,
    plan_device_map,
)
from ckptkit.resolve.resolve import resolve_ckpt_dir
from tests._subprocess import run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_max_memory_strings_as_the_cli_writes_them():
    assert parse_max_memory("cpu=2GB, 1=1MiB,0=512") == {0: 512, 1: 2**20, "cpu": 2 * 10**9}
    assert normalize_max_memory({"cuda:1": "1KiB", "disk": 5, "cpu": "1KB"}) == {
        1: 1024,
        "cpu": 1000,
        "disk": 5,
    }


@pytest.mark.parametrize("text", ["0:20GiB", "gpu=1GB", "cpu=lots"])
def test_bad_max_memory_says_what_to_write(text):
    with pytest.raises(ValueError, match=r"=|device|size"):
        parse_max_memory(text)


def test_clean_device_map_merges_like_accelerate():
    from accelerate.utils.modeling import clean_device_map as accelerate_clean

    raw = {"a.0": 0, "a.1": 0, "b.x": "cpu", "b.y": "disk", "c": "disk"}
    assert (
        clean_device_map(dict(raw))
        == accelerate_clean(dict(raw))
        == {"a": 0, "b.x": "cpu", "b.y": "disk", "c": "disk"}
    )
    assert expand_device_map({"": 0, "b": "cpu"}, ["a.w", "b.w"]) == {"a.w": 0, "b.w": "cpu"}


def test_sizes_come_from_headers(layouts):
    from safetensors.torch import load_file

    ckpt = resolve_ckpt_dir(layouts["t5_sharded"])
    entries = {e.name: e for e in checkpoint_tensors(ckpt)}
    stored = {}
    for path in ckpt.weight_files:
        stored.update(load_file(path))
    assert set(entries) == set(stored)
    assert all(entries[n].held_bytes(None) == t.numel() * t.element_size() for n, t in stored.items())
    assert sorted({e.file_index for e in entries.values()}) == list(range(len(ckpt.weight_files)))


def test_torch_zip_sources_are_planned_without_loading(layouts):
    safetensors_plan = plan_device_map(layouts["t5_single"], max_memory={"cpu": "60KB"})
    torch_plan = plan_device_map(layouts["t5_bin"], max_memory={"cpu": "60KB"})
    assert torch_plan.total_bytes == safetensors_plan.total_bytes
    assert torch_plan.device_map == safetensors_plan.device_map
    assert {"cpu", "disk"} <= set(torch_plan.device_map.values())


def test_plan_is_json_ready_and_readable(layouts):
    plan = plan_device_map(layouts["vae_variants"], max_memory="cpu=50KB", variant="fp16")
    assert plan.dtype is None and plan.total_bytes == sum(plan.bytes_per_device.values())
    data = json.loads(json.dumps(plan.to_dict()))
    assert data["device_map"] == plan.device_map
    assert "disk" in plan.format() and "cpu" in plan.format()


def test_unknown_mode_and_missing_checkpoint(tmp_path, layouts):
    with pytest.raises(ValueError, match="device_map"):
        plan_device_map(layouts["t5_single"], max_memory="cpu=1GB", device_map="fastest")
    with pytest.raises(CheckpointNotFoundError):
        plan_device_map(tmp_path / "nothing", max_memory="cpu=1GB")


def test_planning_never_imports_torch(layouts):
    code = (
        "import sys\n"
        "import ckptkit\n"
        "plan_device_map = ckptkit.plan_device_map\n"
        f"plan = plan_device_map({os.fspath(layouts['t5_sharded'])!r}, max_memory='0=30KB,cpu=30KB')\n"
        "assert plan.device_map, plan\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    env = {**os.environ, "PYTHONPATH": os.fspath(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_cli_plan_device_map_equals_the_library_plan(layouts):
    spec = str(layouts["pixart"])
    result = run_cli("plan", spec, "--device-map", "--max-memory", "cpu=30KB", "--json")
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    expected = plan_device_map(spec, max_memory="cpu=30KB").to_dict()
    assert printed["device_map"] == expected["device_map"]
    assert set(printed["device_map"].values()) == {"cpu", "disk"}
    human = run_cli("plan", spec, "--device-map", "sequential", "--max-memory", "cpu=1GiB")
    assert human.returncode == 0 and "cpu" in human.stdout
    missing = run_cli("plan", spec, "--device-map")
    assert missing.returncode == 2 and "--max-memory" in missing.stderr
    assert run_cli("plan", spec).returncode == 2
