"""A ``torch.distributed.checkpoint`` directory as a resave source: the one writer, every option."""

from __future__ import annotations

import os

import pytest
import torch

from ckptkit import CheckpointNotFoundError, CorruptCheckpointError, dcp_to_safetensors, load_sharded, resave
from ckptkit.save import sources
from ckptkit.save.sources import DcpCheckpoint

pytestmark = pytest.mark.filterwarnings("ignore:torch.distributed is disabled")  # dcp.save, no_dist


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "embed.weight": torch.randn(32, 8),
        "blocks.0.attn.weight": torch.randn(8, 8).bfloat16(),
        "blocks.0.norm.weight": torch.randn(8),
        "blocks.1.attn.weight": torch.randn(8, 8).bfloat16(),
        "blocks.1.norm.weight": torch.randn(8),
        "position_ids": torch.arange(16),
        "mask": torch.tensor([True, False, True]),
    }


def _save_dcp(state: dict[str, object], path: os.PathLike[str]) -> None:
    import torch.distributed.checkpoint as dcp

    dcp.save(state, checkpoint_id=os.fspath(path), no_dist=True)


def test_resave_of_a_dcp_directory_loads_back_equal(tmp_path) -> None:
    state = _state()
    _save_dcp(state, tmp_path / "dcp")
    out = resave(tmp_path / "dcp", tmp_path / "out", max_shard_size="600B", progress=False)
    names = [p.name for p in out.weight_files]
    assert len(names) > 1 and all(n.startswith("model-") for n in names)
    assert (tmp_path / "out" / "model.safetensors.index.json").is_file()
    assert not (tmp_path / "out" / ".metadata").exists()  # the source's own files are not "other files"
    back = load_sharded(out)
    assert back.keys() == state.keys()
    for key, value in state.items():
        assert back[key].dtype == value.dtype, key
        assert torch.equal(back[key], value), key


def test_dcp_source_honours_dtype_variant_and_single_file(tmp_path) -> None:
    state = _state()
    _save_dcp(state, tmp_path / "dcp")
    fp16 = resave(tmp_path / "dcp", tmp_path / "fp16", variant="fp16", max_shard_size=None, progress=False)
    assert [p.name for p in fp16.weight_files] == ["model.fp16.safetensors"]
    back = load_sharded(fp16)
    for key, value in state.items():
        expected = value.half() if value.is_floating_point() else value  # integers and bools stay
        assert back[key].dtype == expected.dtype and torch.equal(back[key], expected), key
    bf16 = resave(
        tmp_path / "dcp",
        tmp_path / "bf16",
        dtype="bf16",
        weights_name="diffusion_pytorch_model",
        progress=False,
    )
    assert [p.name for p in bf16.weight_files] == ["diffusion_pytorch_model.safetensors"]
    assert load_sharded(bf16)["embed.weight"].dtype == torch.bfloat16


def test_dcp_source_refuses_options_it_cannot_honour(tmp_path) -> None:
    _save_dcp(_state(), tmp_path / "dcp")
    with pytest.raises(CheckpointNotFoundError, match=r"torch\.distributed\.checkpoint directory"):
        load_sharded(tmp_path / "dcp")  # a loader cannot read it; the error says how to make it loadable
    with pytest.raises(ValueError, match="subfolder="):
        resave(tmp_path / "dcp", tmp_path / "a", subfolder="transformer")
    with pytest.raises(ValueError, match="unwrap="):
        resave(tmp_path / "dcp", tmp_path / "b", unwrap="state_dict")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dcp"]


def test_export_reads_a_batch_ahead_of_the_writer_in_its_order(tmp_path, monkeypatch) -> None:
    # Mixed dtypes in one shard: the writer writes bf16 after f32 tensors, not in key order; the
    # reader follows it, so it never holds more than one batch.
    tensors = _state()
    _save_dcp({"model": {**tensors, "step": 7}, "optim": {"lr": torch.ones(1)}}, tmp_path / "dcp")
    held: dict[str, int] = {}
    loads: list[int] = []
    take, load_from = sources._DcpReader.take, sources._DcpReader._load_from

    def counting_take(self, name):
        tensor = take(self, name)
        held[name] = tensor.nbytes + sum(t.nbytes for t in self.loaded.values())
        return tensor

    def counting_load(self, start):
        loads.append(start)
        return load_from(self, start)

    monkeypatch.setattr(sources._DcpReader, "take", counting_take)
    monkeypatch.setattr(sources._DcpReader, "_load_from", counting_load)
    with pytest.warns(UserWarning, match="non-tensor"):
        out = dcp_to_safetensors(tmp_path / "dcp", tmp_path / "out", prefix="model.", batch_size="300B")
    # One batch of at most 300 bytes at a time; the 1 KiB embedding alone in its own.
    assert held.pop("embed.weight") == 32 * 8 * 4
    assert held.keys() == tensors.keys() - {"embed.weight"} and max(held.values()) <= 300
    assert len(loads) < len(tensors)  # batches, not a load per tensor
    back = load_sharded(out)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], v) for k, v in tensors.items())
    with pytest.raises(CorruptCheckpointError, match=r"model\."):
        resave(DcpCheckpoint(tmp_path / "dcp", prefix="optimizer."), tmp_path / "none")
    assert not (tmp_path / "none").exists()
