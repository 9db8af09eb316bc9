"""ckptkit.distributed on real torch.distributed: 2 and 4 gloo processes on CPU, FSDP2 and DTensor.

Every check compares against the real thing: tensors from ``safetensors.torch.load_file``, local
shards from ``distribute_tensor`` of those tensors (DTensor's own chunking), forward outputs of the
model that ``from_pretrained`` loads, and the files transformers' own ``save_pretrained`` writes.
"""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ckptkit.distributed import (
    dcp_to_safetensors,
    has_dtensor_params,
    load_sharded_distributed,
    save_sharded,
)
from ckptkit.distributed.boxes import Box, byte_runs
from ckptkit.distributed.layout import TensorSpec, plan_layout
from ckptkit.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    DestinationExistsError,
    ModelMismatchError,
)
from ckptkit.format import read_header

SHARD = "24KB"
INPUT_IDS = torch.arange(12).reshape(1, 12)


def tiny_llama_config(vocab_size: int = 130):
    from transformers import LlamaConfig

    # vocab 130 does not divide by 4: FSDP2 chunks it unevenly (33, 33, 33, 31).
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )


def save_tiny_llama(directory: Path, seed: int = 0) -> Path:
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    LlamaForCausalLM(tiny_llama_config()).save_pretrained(directory, max_shard_size=SHARD)
    return directory


def load_reference(directory: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


# ---------------------------------------------------------------- one process, no process group


def test_byte_runs_select_exactly_the_box():
    full = torch.arange(4 * 5 * 6, dtype=torch.int16).reshape(4, 5, 6)
    raw = full.reshape(-1).view(torch.uint8)
    for offsets, sizes in [
        ((1, 0, 0), (2, 5, 6)),
        ((0, 2, 0), (4, 2, 6)),
        ((1, 1, 3), (3, 3, 3)),
        ((0, 0, 0), (0, 5, 6)),
    ]:
        box = Box(tuple(full.shape), offsets, sizes)
        got = torch.empty(sizes, dtype=torch.int16)
        flat = got.reshape(-1).view(torch.uint8)
        for run in byte_runs(box, 2):
            flat[run.target : run.target + run.nbytes] = raw[run.source : run.source + run.nbytes]
        expected = full[tuple(slice(o, o + s) for o, s in zip(offsets, sizes, strict=True))]
        assert torch.equal(got, expected), (offsets, sizes)
    assert len(list(byte_runs(Box((8, 6), (4, 0), (4, 6)), 2))) == 1  # Shard(0): one range


def test_layout_matches_huggingface_hub_split():
    from huggingface_hub import split_torch_state_dict_into_shards

    torch.manual_seed(0)
    state = {f"layer.{i}.weight": torch.zeros(i % 7 + 1, 33, dtype=torch.bfloat16) for i in range(40)}
    state["big"] = torch.zeros(300, 40)
    state["mask"] = torch.zeros(5, dtype=torch.bool)
    split = split_torch_state_dict_into_shards(state, max_shard_size=2000)
    layout = plan_layout(
        [
            TensorSpec(
                k, {torch.bfloat16: "BF16", torch.float32: "F32", torch.bool: "BOOL"}[v.dtype], tuple(v.shape)
            )
            for k, v in state.items()
        ],
        max_shard_size=2000,
    )
    assert layout.index_json()["weight_map"] == split.tensor_to_filename
    assert layout.total_size == sum(v.numel() * v.element_size() for v in state.values())


def test_save_and_load_without_process_group(tmp_path):
    from transformers import LlamaForCausalLM

    ckpt = save_tiny_llama(tmp_path / "ckpt")
    reference = load_reference(ckpt)
    torch.manual_seed(1)
    model = LlamaForCausalLM(tiny_llama_config())
    assert not has_dtensor_params(model)
    result = load_sharded_distributed(ckpt, model)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert (
        result.bytes_read
        == result.bytes_total
        == sum(t.numel() * t.element_size() for t in reference.values())
    )
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key

    saved = save_sharded(model, tmp_path / "saved", max_shard_size=SHARD)
    assert sorted(p.name for p in saved.weight_files) == sorted(p.name for p in ckpt.glob("*.safetensors"))
    for path in saved.weight_files:  # same files, tensors and offsets as transformers writes
        assert read_header(path).tensors == read_header(ckpt / path.name).tensors
    assert (
        json.loads((tmp_path / "saved" / "model.safetensors.index.json").read_text())["weight_map"]
        == json.loads((ckpt / "model.safetensors.index.json").read_text())["weight_map"]
    )
    again = LlamaForCausalLM.from_pretrained(tmp_path / "saved")
    for key, value in again.state_dict().items():
        assert torch.equal(value, reference[key]), key


def test_strict_mismatch_raises_before_reading(tmp_path):
    from transformers import LlamaForCausalLM

    ckpt = save_tiny_llama(tmp_path / "ckpt")
    model = LlamaForCausalLM(tiny_llama_config(vocab_size=131))
    with pytest.raises(ModelMismatchError, match=r"checkpoint \(130, 32\) vs model \(131, 32\)"):
        load_sharded_distributed(ckpt, model)
    model = torch.nn.Linear(32, 130, bias=False)
    with pytest.raises(ModelMismatchError, match="missing keys"):
        load_sharded_distributed(ckpt, model)
    result = load_sharded_distributed(ckpt, model, strict=False, prefix="lm_head.")
    assert result.missing_keys == [] and result.bytes_read == 130 * 32 * 4
    assert torch.equal(model.weight, load_reference(ckpt)["lm_head.weight"])


def test_dtensor_model_refuses_mmap_true_naming_it(tmp_path):
    """Local shards are the model's own memory, never views of the files: ``mmap=True`` raises."""
    from tests._subprocess import run_python

    code = """
import os, sys, torch, torch.distributed as dist
from safetensors.torch import save_file
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor
from ckptkit import load_sharded

root = sys.argv[1]
dist.init_process_group("gloo", init_method="file://" + os.path.join(root, "store"), rank=0, world_size=1)
save_file({"weight": torch.arange(12.0).reshape(4, 3)}, os.path.join(root, "model.safetensors"))
mesh = init_device_mesh("cpu", (1,))
module = torch.nn.Module()
module.weight = torch.nn.Parameter(distribute_tensor(torch.zeros(4, 3), mesh, [Shard(0)]))
try:
    load_sharded(root, model=module, mmap=True)
except TypeError as exc:
    print("refused:", exc)
assert torch.count_nonzero(module.weight.to_local()) == 0  # refused before reading
load_sharded(root, model=module, mmap=False)  # private copies: what this path does anyway
print("loaded:", module.weight.to_local().flatten().tolist())
dist.destroy_process_group()
"""
    done = run_python(code, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (
        "refused: load_sharded: mmap=True cannot be used for a model with DTensor parameters" in done.stdout
    )
    assert f"loaded: {[float(v) for v in range(12)]}" in done.stdout


def test_save_refuses_non_empty_destination_and_leaves_nothing(tmp_path):
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_sharded(torch.nn.Linear(2, 2), tmp_path / "dst")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]
    save_sharded(torch.nn.Linear(2, 2), tmp_path / "dst", overwrite=True, weights_name="model")
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # dcp.save below, no_dist
def test_save_and_dcp_export_publish_through_the_one_atomic_path(tmp_path):
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("x")
    with pytest.raises(DestinationExistsError, match="overwrite=True"):
        save_sharded(torch.nn.Linear(2, 2), tmp_path / "dst")
    # What a killed run leaves beside the destination is cleaned up by the next one (crash recovery).
    (tmp_path / ".dst.ckptkit-tmp-killed_1").mkdir()
    (tmp_path / ".dst.ckptkit-tmp-killed_1" / "model.safetensors").write_bytes(b"half")
    save_sharded(torch.nn.Linear(2, 2), tmp_path / "dst", overwrite=True, weights_name="model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]
    import torch.distributed.checkpoint as dcp

    dcp.save({"w": torch.ones(3)}, checkpoint_id=os.fspath(tmp_path / "dcp"), no_dist=True)
    with pytest.raises(DestinationExistsError):
        dcp_to_safetensors(tmp_path / "dcp", tmp_path / "dst")
    assert load_file(tmp_path / "dst" / "model.safetensors").keys() == {"weight", "bias"}


def test_save_runs_out_of_disk_as_a_typed_error_and_keeps_the_old_checkpoint(tmp_path):
    from tests._subprocess import run_python

    old = tmp_path / "dst"
    save_sharded(torch.nn.Linear(2, 2), old, weights_name="model")
    before = (old / "model.safetensors").read_bytes()
    script = f"""
import resource, signal, torch
from ckptkit.distributed import save_sharded
from ckptkit.errors import DiskFullError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    save_sharded(torch.nn.Linear(512, 512), {str(old)!r}, overwrite=True, weights_name="model")
except DiskFullError as exc:
    print("DiskFullError", exc)
"""
    done = run_python(script)
    assert "DiskFullError" in done.stdout, done.stdout + done.stderr
    assert (old / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst"]


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # our own dcp.load below, no_dist
def test_dcp_round_trip_in_one_process(tmp_path):
    import torch.distributed.checkpoint as dcp
    from transformers import LlamaForCausalLM

    from ckptkit.distributed import safetensors_to_dcp

    ckpt = save_tiny_llama(tmp_path / "ckpt")
    reference = load_reference(ckpt)
    safetensors_to_dcp(ckpt, tmp_path / "dcp", prefix="model.")
    # torch's own loader reads it into a {"model": state_dict} training state
    torch.manual_seed(3)
    model = LlamaForCausalLM(tiny_llama_config())
    state = {"model": model.state_dict()}
    dcp.load(state, checkpoint_id=os.fspath(tmp_path / "dcp"), no_dist=True)
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    back = dcp_to_safetensors(
        tmp_path / "dcp", tmp_path / "back", prefix="model.", max_shard_size=None, dtype="bf16"
    )
    assert [p.name for p in back.weight_files] == ["model.safetensors"]
    for key, value in load_file(back.weight_files[0]).items():
        assert value.dtype == torch.bfloat16
        assert torch.equal(value, reference[key].bfloat16()), key
    with pytest.raises(CorruptCheckpointError, match=r"model\."):
        dcp_to_safetensors(tmp_path / "dcp", tmp_path / "none", prefix="optim.")
    assert not (tmp_path / "none").exists()


def test_torch_file_checkpoint_is_read_by_boxes(tmp_path):
    torch.manual_seed(0)
    source = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Linear(6, 4))
    (tmp_path / "bin").mkdir()
    torch.save(source.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    target = torch.nn.Sequential(torch.nn.Linear(8, 6), torch.nn.Linear(6, 4))
    result = load_sharded_distributed(tmp_path / "bin", target)
    assert result.bytes_read == sum(t.numel() * 4 for t in source.state_dict().values())
    for key, value in target.state_dict().items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_dcp_to_safetensors_names_a_missing_dcp_directory(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match=r"\.metadata"):
        dcp_to_safetensors(tmp_path, tmp_path / "out")


# ---------------------------------------------------------------- 2 and 4 processes


def _init(rank: int, world: int, store: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)  # several ranks share few cores: keep them from oversubscribing
    dist.init_process_group(
        "gloo", init_method=f"file://{store}", rank=rank, world_size=world, timeout=timedelta(seconds=300)
    )


def _expected_local(full: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import distribute_tensor

    # DTensor's own chunking of the true tensor, with no communication.
    return distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None).to_local()


def _worker(rank: int, world: int, store: str, root: str) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
    from transformers import LlamaForCausalLM

    from ckptkit.distributed import SaveStats, last_save_stats, safetensors_to_dcp

    _init(rank, world, store)
    base = Path(root)
    ckpt = base / "ckpt"
    reference = load_reference(ckpt)
    total = sum(t.numel() * t.element_size() for t in reference.values())
    mesh = init_device_mesh("cpu", (world,))

    def sharded_llama(seed: int, meta: bool = False) -> torch.nn.Module:
        torch.manual_seed(seed)
        with torch.device("meta" if meta else "cpu"):
            model = LlamaForCausalLM(tiny_llama_config())
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        if meta:
            model.to_empty(device="cpu")  # allocates this rank's shards only
            # non-persistent buffers (rotary frequencies) are computed, not stored
            model.model.rotary_emb = type(model.model.rotary_emb)(config=model.config)
        return model

    # FSDP2 load: every local shard equals DTensor's chunk of the true tensor.
    model = sharded_llama(seed=100 + rank, meta=True)
    assert has_dtensor_params(model)
    result = load_sharded_distributed(ckpt, model)
    assert result.missing_keys == [] and result.unexpected_keys == []
    owned = 0
    for name, param in model.named_parameters():
        assert isinstance(param, DTensor), name
        local = param.to_local()
        assert torch.equal(local, _expected_local(reference[name], param)), name
        owned += local.numel() * local.element_size()
    # Bytes read: exactly this rank's shards, about 1/N of the model (FSDP2 replicates nothing here).
    assert result.bytes_read == owned
    assert result.bytes_total == total
    assert result.bytes_read <= total / world * 1.1, (result.bytes_read, total)

    # Forward: the same logits as the model transformers loads in one process.
    with torch.no_grad():
        got = model(INPUT_IDS).logits
    torch.testing.assert_close(got, torch.load(base / "logits.pt"), rtol=1e-5, atol=1e-5)

    # save_sharded: each rank writes only its shards; the files are transformers' own.
    saved = base / "saved"
    stats = SaveStats()
    save_sharded(model, saved, max_shard_size=SHARD, stats=stats)
    assert stats.bytes_written == owned
    with pytest.deprecated_call():  # the old module-global way, for one release
        assert last_save_stats().bytes_written == owned
    if rank == 0:
        for path in sorted(ckpt.glob("*.safetensors")):
            assert read_header(saved / path.name).tensors == read_header(path).tensors
            for key, value in load_file(saved / path.name).items():
                assert torch.equal(value, reference[key]), key
        again = LlamaForCausalLM.from_pretrained(saved)
        assert again.config.architectures == ["LlamaForCausalLM"]
        for key, value in again.state_dict().items():
            assert torch.equal(value, reference[key]), key
    dist.barrier()

    # DCP round trips: torch's own dcp.save of the FSDP2 state -> safetensors -> DCP -> FSDP2 model.
    dcp.save(model.state_dict(), checkpoint_id=os.fspath(base / "dcp"))
    if rank == 0:
        exported = dcp_to_safetensors(
            base / "dcp", base / "from_dcp", max_shard_size=SHARD, batch_size="16KB"
        )
        assert sorted(p.name for p in exported.weight_files) == sorted(
            p.name for p in ckpt.glob("*.safetensors")
        )
        assert load_reference(base / "from_dcp").keys() == reference.keys()
        for key, value in load_reference(base / "from_dcp").items():
            assert torch.equal(value, reference[key]), key
    dist.barrier()
    safetensors_to_dcp(ckpt, base / "dcp2")
    fresh = sharded_llama(seed=200 + rank, meta=True)
    state = fresh.state_dict()
    dcp.load(state, checkpoint_id=os.fspath(base / "dcp2"))
    for name, param in fresh.named_parameters():
        assert torch.equal(param.to_local(), _expected_local(reference[name], param)), name

    # distribute_tensor with Shard(1) (strided reads/writes) and Replicate, on a 2-D mesh for 4 ranks.
    grid = init_device_mesh("cpu", (2, world // 2)) if world == 4 else mesh
    cols = (Shard(0), Shard(1)) if world == 4 else (Shard(1),)
    both = (Replicate(), Shard(1)) if world == 4 else (Replicate(),)
    module = torch.nn.Module()
    module.embed = torch.nn.Parameter(distribute_tensor(torch.zeros(130, 32), grid, cols))
    module.head = torch.nn.Parameter(distribute_tensor(torch.zeros(130, 32), grid, both))
    loaded = load_sharded_distributed(ckpt, _Pair(module), strict=False)
    assert loaded.missing_keys == []
    assert torch.equal(
        module.embed.to_local(), _expected_local(reference["model.embed_tokens.weight"], module.embed)
    )
    assert torch.equal(module.head.to_local(), _expected_local(reference["lm_head.weight"], module.head))
    assert module.embed.full_tensor().equal(reference["model.embed_tokens.weight"])
    expected_bytes = sum(p.to_local().numel() * 4 for p in (module.embed, module.head))
    assert loaded.bytes_read == expected_bytes
    save_sharded(_Pair(module), base / "pair", max_shard_size=None, weights_name="model")
    if rank == 0:
        pair = load_file(base / "pair" / "model.safetensors")
        assert torch.equal(pair["model.embed_tokens.weight"], reference["model.embed_tokens.weight"])
        assert torch.equal(pair["lm_head.weight"], reference["lm_head.weight"])
    dist.barrier()
    dist.destroy_process_group()


class _Pair(torch.nn.Module):
    """Exposes two DTensor parameters under the checkpoint's key names."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.embed_tokens = torch.nn.Module()
        self.model.embed_tokens.register_parameter("weight", inner.embed)
        self.lm_head = torch.nn.Module()
        self.lm_head.register_parameter("weight", inner.head)


@pytest.mark.parametrize("world", [2, 4])
def test_fsdp2_load_save_dcp_on_gloo(tmp_path, world):
    import torch.multiprocessing as mp
    from transformers import LlamaForCausalLM

    save_tiny_llama(tmp_path / "ckpt")
    with torch.no_grad():  # the logits of the model transformers loads in one process
        torch.save(
            LlamaForCausalLM.from_pretrained(tmp_path / "ckpt")(INPUT_IDS).logits, tmp_path / "logits.pt"
        )
    mp.spawn(
        _worker, args=(world, os.fspath(tmp_path / "store"), os.fspath(tmp_path)), nprocs=world, join=True
    )
