"""One module-filling plan: every loading path gives the same answer and the same error.

The paths: ``load_sharded(model=)`` (materialized and meta models), ``load_sharded(device_map=)``
(accelerate placement) and models whose parameters are DTensors (FSDP2 ``fully_shard`` on a gloo
process group). Each test feeds all of them the same checkpoint and model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import ClassVar

import pytest
import torch
from safetensors.torch import save_file

from ckptkit import load_sharded
from ckptkit.distributed import load_sharded_distributed
from ckptkit.errors import AmbiguousCheckpointError, ModelMismatchError
from ckptkit.io.module_fill import StoredTensor, plan_module_fill
from ckptkit.placement.dispatch import load_with_device_map


class Block(torch.nn.Module):
    """A module with a float32-kept part, as diffusers and transformers models declare it."""

    _keep_in_fp32_modules: ClassVar[list[str]] = ["norm"]

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(width, width)
        self.norm = torch.nn.LayerNorm(width)
        self.out = torch.nn.Linear(width, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.proj(x.to(self.proj.weight.dtype))
        return self.out(self.norm(h.float()).to(self.out.weight.dtype))


def _state(width: int = 8, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.detach().clone() for k, v in Block(width).state_dict().items()}


def _save(directory: Path, state: dict[str, torch.Tensor], wrap: str = "", fmt: str = "safetensors") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"{wrap}{k}": v.contiguous() for k, v in state.items()}
    if fmt == "torch":
        torch.save(tensors, directory / "pytorch_model.bin")
    else:
        save_file(tensors, directory / "model.safetensors")
    return directory


FORMATS = ["safetensors", "torch"]


@pytest.fixture(scope="module")
def gloo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A one-process gloo group and its mesh, for FSDP2 models."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    store = tmp_path_factory.mktemp("store") / "store"
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=0, world_size=1, timeout=timedelta(seconds=60)
    )
    try:
        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def _meta(width: int = 8) -> Block:
    with torch.device("meta"):
        return Block(width)


def _fsdp(mesh: object, width: int = 8) -> Block:
    from torch.distributed.fsdp import fully_shard

    model = Block(width)
    for part in (model.proj, model.norm, model.out):  # one dtype per FSDP unit
        fully_shard(part, mesh=mesh)
    return model


def _paths(mesh: object) -> dict[str, Callable[..., tuple[torch.nn.Module, object]]]:
    """Every loading path: a function (ckpt, width, **options) -> (the filled model, the result)."""

    def plain(ckpt: Path, width: int = 8, **options: object) -> tuple[torch.nn.Module, object]:
        model = Block(width)
        return model, load_sharded(ckpt, model=model, **options)

    def meta(ckpt: Path, width: int = 8, **options: object) -> tuple[torch.nn.Module, object]:
        model = _meta(width)
        return model, load_sharded(ckpt, model=model, **options)

    def device_map(ckpt: Path, width: int = 8, **options: object) -> tuple[torch.nn.Module, object]:
        model = _meta(width)
        return model, load_sharded(ckpt, model=model, device_map={"": "cpu"}, **options)

    def dtensor(ckpt: Path, width: int = 8, **options: object) -> tuple[torch.nn.Module, object]:
        model = _fsdp(mesh, width)
        return model, load_sharded(ckpt, model=model, **options)

    return {"plain": plain, "meta": meta, "device_map": device_map, "dtensor": dtensor}


PATHS = ["plain", "meta", "device_map", "dtensor"]


def _full(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", PATHS)
def test_a_shape_mismatch_is_the_same_model_mismatch_error_on_every_path(tmp_path, gloo, path, fmt):
    ckpt = _save(tmp_path / "ckpt", _state(width=8), fmt=fmt)
    with pytest.raises(ModelMismatchError) as info:
        _paths(gloo)[path](ckpt, width=6)
    message = str(info.value)
    assert message.startswith(f"{ckpt}: 5 tensors have other shapes than the model's: ")
    assert "proj.weight: checkpoint (8, 8) vs model (6, 6)" in message


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", PATHS)
def test_missing_and_unexpected_keys_are_the_same_error_on_every_path(tmp_path, gloo, path, fmt):
    state = _state()
    state["extra"] = torch.zeros(2)
    del state["out.bias"]
    ckpt = _save(tmp_path / "ckpt", state, fmt=fmt)
    with pytest.raises(
        ModelMismatchError, match=r"1 missing keys \['out.bias'\], 1 unexpected keys \['extra'\]"
    ):
        _paths(gloo)[path](ckpt)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", PATHS)
def test_dtype_casts_and_keeps_fp32_modules_on_every_path(tmp_path, gloo, path, fmt):
    state = _state()
    ckpt = _save(tmp_path / "ckpt", state, fmt=fmt)
    model, result = _paths(gloo)[path](ckpt, dtype=torch.bfloat16)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for name, tensor in model.state_dict().items():
        want = torch.float32 if name.startswith("norm.") else torch.bfloat16
        assert tensor.dtype == want, (name, tensor.dtype)
        assert torch.equal(_full(tensor), state[name].to(want)), name
    # an explicit list wins over the model's own (an empty one keeps nothing in float32)
    model, _ = _paths(gloo)[path](ckpt, dtype=torch.bfloat16, keep_in_fp32_modules=[])
    assert model.norm.weight.dtype == torch.bfloat16


def test_the_filled_fsdp2_model_runs_in_the_cast_dtype(tmp_path, gloo):
    state = _state()
    ckpt = _save(tmp_path / "ckpt", state)
    reference = Block()
    load_sharded(ckpt, model=reference, dtype=torch.bfloat16)
    model = _fsdp(gloo)
    load_sharded_distributed(ckpt, model, dtype="bf16")
    x = torch.randn(3, 8)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("path", PATHS)
def test_nested_wrappers_are_stripped_on_every_path(tmp_path, gloo, path, fmt):
    state = _state()
    ckpt = _save(tmp_path / "ckpt", state, wrap="module._orig_mod.", fmt=fmt)
    model, result = _paths(gloo)[path](ckpt, strip_prefixes=("_orig_mod.", "module."))
    assert result.missing_keys == [] and result.unexpected_keys == []
    for name, tensor in model.state_dict().items():
        assert torch.equal(_full(tensor), state[name]), name


@pytest.mark.parametrize("path", PATHS)
def test_a_prefix_collision_is_refused_on_every_path(tmp_path, gloo, path):
    state = _state()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    tensors = {f"module.{k}": v for k, v in state.items()}
    tensors["proj.weight"] = state["proj.weight"].clone()
    save_file(tensors, ckpt / "model.safetensors")
    with pytest.raises(
        AmbiguousCheckpointError,
        match=r"'module\.proj\.weight' and 'proj\.weight'|'proj\.weight' and 'module\.proj\.weight'",
    ):
        _paths(gloo)[path](ckpt, strip_prefixes="module.")


def test_the_plan_reads_tied_weights_once_and_keeps_fp32_by_whole_name_parts():
    model = torch.nn.Module()
    model.a = torch.nn.Linear(2, 2, bias=False)
    model.b = torch.nn.Linear(2, 2, bias=False)
    model.b.weight = model.a.weight
    model.norm20 = torch.nn.Linear(2, 2, bias=False)
    stored = [StoredTensor(k, (2, 2), torch.float16) for k in ("a.weight", "norm20.weight")]
    plan = plan_module_fill(model, stored, dtype=torch.bfloat16, keep_in_fp32=["a", "norm2"])
    assert list(plan.fills) == ["a.weight", "norm20.weight"]  # b.weight is a.weight
    assert plan.missing_keys == [] and plan.unexpected_keys == []
    assert plan.cast("a.weight", torch.float16) == torch.float32
    assert plan.cast("norm20.weight", torch.float16) == torch.bfloat16  # "norm2" is not "norm20"
    assert plan.cast("a.weight", torch.int64) is None


def test_load_with_device_map_takes_the_keep_list_without_touching_the_model(tmp_path):
    ckpt = _save(tmp_path / "ckpt", _state())
    model = _meta()
    load_with_device_map(ckpt, model, device_map="cpu", dtype=torch.float16, keep_in_fp32_modules=["proj"])
    assert model.proj.weight.dtype == torch.float32 and model.norm.weight.dtype == torch.float16
    assert type(model)._keep_in_fp32_modules == ["norm"] and "_keep_in_fp32_modules" not in vars(model)


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"device_map": {"": "cpu"}, "device": "cpu"}, "device"),
        ({"device_map": {"": "cpu"}, "num_threads": 2}, "num_threads"),
        ({"device_map": {"": "cpu"}, "progress": False}, "progress"),
        ({"device_map": {"": "cpu"}, "unwrap": "state_dict"}, "unwrap"),
        ({"max_memory": {"cpu": "1GiB"}}, "max_memory"),
        ({"offload_folder": "x"}, "offload_folder"),
        ({"no_split_module_classes": ["Block"]}, "no_split_module_classes"),
    ],
)
def test_options_a_branch_cannot_honour_raise_naming_them(tmp_path, options, named):
    ckpt = _save(tmp_path / "ckpt", _state())
    with pytest.raises(TypeError, match=rf"load_sharded: {named} cannot be used"):
        load_sharded(ckpt, model=_meta(), **options)


@pytest.mark.parametrize(
    "option", [{"num_threads": 2}, {"progress": True}, {"unwrap": True}, {"max_memory": {"cpu": 1}}]
)
def test_options_a_dtensor_model_cannot_honour_raise_naming_them(tmp_path, gloo, option):
    ckpt = _save(tmp_path / "ckpt", _state())
    with pytest.raises(TypeError, match=f"{next(iter(option))} cannot be used for a model with DTensor"):
        load_sharded(ckpt, model=_fsdp(gloo), **option)


def test_keep_list_needs_a_model(tmp_path):
    ckpt = _save(tmp_path / "ckpt", _state())
    with pytest.raises(TypeError, match="keep_in_fp32_modules cannot be used without model="):
        load_sharded(ckpt, keep_in_fp32_modules=["norm"])


def _two_rank_worker(rank: int, world: int, store: str, root: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import distribute_tensor

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=timedelta(seconds=120)
    )
    try:
        mesh = init_device_mesh("cpu", (world,))
        ckpt = Path(root) / "ckpt"
        state = _state(width=9)  # 9 rows over 2 ranks: FSDP2 shards them unevenly (5, 4)
        model = _fsdp(mesh, width=9)
        result = load_sharded(ckpt, model=model, dtype=torch.bfloat16)
        assert result.missing_keys == [] and result.unexpected_keys == []
        for name, param in model.named_parameters():
            want = torch.float32 if name.startswith("norm.") else torch.bfloat16
            assert param.dtype == want and param.to_local().dtype == want, name
            expected = distribute_tensor(state[name].to(want), mesh, param.placements, src_data_rank=None)
            assert torch.equal(param.to_local(), expected.to_local()), name
        reference = Block(9)
        load_sharded(ckpt, model=reference, dtype=torch.bfloat16)
        x = torch.randn(3, 9, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            assert torch.equal(model(x), reference(x))
        try:
            load_sharded(ckpt, model=_fsdp(mesh, width=8))
        except ModelMismatchError as exc:
            assert "proj.weight: checkpoint (9, 9) vs model (8, 8)" in str(exc)
        else:
            raise AssertionError("no ModelMismatchError")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_cast_keep_fp32_and_refuse_a_shape_mismatch(tmp_path):
    import os

    import torch.multiprocessing as mp

    _save(tmp_path / "ckpt", _state(width=9))
    mp.spawn(
        _two_rank_worker, args=(2, os.fspath(tmp_path / "store"), os.fspath(tmp_path)), nprocs=2, join=True
    )
