"""resolve_ckpt_dir on local directories and files (no hub involved)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ckptkit import (
    CheckpointDir,
    CheckpointNotFoundError,
    IncompleteCheckpointError,
    VariantNotFoundError,
    resolve_ckpt_dir,
)
from ckptkit.resolve.repo_files import parse_cache_path, parse_repo_spec, plan_files


def _load(ckpt: CheckpointDir) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for path in ckpt.weight_files:
        out.update(load_file(path))
    return out


def test_component_directory(layouts):
    ckpt = resolve_ckpt_dir(layouts["t5_sharded"])
    assert ckpt.path == layouts["t5_sharded"] and ckpt.repo_id is None and ckpt.root == layouts["t5_sharded"]
    assert ckpt.index_file is not None and len(ckpt.weight_files) == 5
    from transformers import T5EncoderModel

    reference = T5EncoderModel.from_pretrained(layouts["t5_sharded"]).state_dict()
    loaded = _load(ckpt)
    for name, tensor in loaded.items():
        assert torch.equal(tensor, reference[name]), name


def test_pipeline_directory_is_one_checkpoint_or_a_component(layouts):
    whole = resolve_ckpt_dir(layouts["pipeline"], variant="fp16", variant_fallback="allow")
    assert list(whole.components) == ["text_encoder", "transformer", "vae"]
    assert [c.variant for c in whole.components.values()] == [None, None, "fp16"]
    assert whole.weight_files == [p for c in whole.components.values() for p in c.weight_files]
    assert list(resolve_ckpt_dir(layouts["pipeline"], components=["vae"]).components) == ["vae"]
    with pytest.raises(
        CheckpointNotFoundError, match=r"not a component.*'unet'.*Fix: pass components= some of"
    ):
        resolve_ckpt_dir(layouts["pipeline"], components=["unet"])
    # Loading needs one model's weights: the pipeline says which subfolders there are.
    with pytest.raises(
        CheckpointNotFoundError, match=r"pass subfolder= one of: text_encoder, transformer, vae"
    ):
        whole.require_single()
    ckpt = resolve_ckpt_dir(layouts["pipeline"], subfolder="vae", variant="fp16")
    assert ckpt.path == layouts["pipeline"] / "vae" and ckpt.subfolder == "vae" and ckpt.variant == "fp16"
    with pytest.raises(CheckpointNotFoundError, match="subfolder 'unet' does not exist"):
        resolve_ckpt_dir(layouts["pipeline"], subfolder="unet")


def test_weights_file_and_shard(layouts):
    single = layouts["pixart"] / "diffusion_pytorch_model.fp16.safetensors"
    ckpt = resolve_ckpt_dir(single)
    assert ckpt.weight_files == [single] and ckpt.path == layouts["pixart"]
    assert _load(ckpt).keys() == load_file(single).keys()

    shard = layouts["t5_sharded"] / "model-00002-of-00005.safetensors"
    assert len(resolve_ckpt_dir(str(shard)).weight_files) == 5


def test_checkpoint_dir_passes_through(layouts):
    ckpt = resolve_ckpt_dir(layouts["pixart"])
    assert resolve_ckpt_dir(ckpt) is ckpt
    assert os.fspath(ckpt) == str(layouts["pixart"])


def test_local_path_wins_over_a_repo_id(layouts, monkeypatch):
    monkeypatch.chdir(layouts["pipeline"].parent)
    # "pipeline/vae" could be a repo id; it exists here, so it is this directory.
    ckpt = resolve_ckpt_dir("pipeline/vae", variant="fp16")
    assert ckpt.repo_id is None and ckpt.path == Path("pipeline/vae")


def test_dangling_single_file_link(layout_copy):
    directory = layout_copy("pixart")
    target = directory / "diffusion_pytorch_model.safetensors"
    moved = directory.parent / "elsewhere.safetensors"
    target.rename(moved)
    os.symlink(moved, target)
    moved.unlink()
    with pytest.raises(IncompleteCheckpointError, match="dangling link"):
        resolve_ckpt_dir(directory)
    with pytest.raises(IncompleteCheckpointError):
        resolve_ckpt_dir(target)


def test_missing_shard_in_a_local_directory(layout_copy):
    directory = layout_copy("t5_sharded")
    (directory / "model-00003-of-00005.safetensors").unlink()
    with pytest.raises(IncompleteCheckpointError, match="model-00003-of-00005"):
        resolve_ckpt_dir(directory)


def test_variant_missing_under_policy_error(layouts):
    with pytest.raises(VariantNotFoundError):
        resolve_ckpt_dir(layouts["t5_sharded"], variant="fp16", variant_fallback="error")


# -- the pure helpers behind the hub forms ---------------------------------------------------------


def test_parse_repo_spec():
    assert parse_repo_spec("org/name") == ("org/name", "")
    assert parse_repo_spec("org/name/vae") == ("org/name", "vae")
    assert parse_repo_spec("org/name/a/b.safetensors") == ("org/name", "a/b.safetensors")
    for not_a_repo in ("name", "/abs/path", "./rel/x", "~/x/y", "org/../x", "a\\b/c", "org//name", ""):
        assert parse_repo_spec(not_a_repo) is None, not_a_repo


def test_parse_cache_path(tmp_path):
    storage = tmp_path / "models--org--my--name"
    assert parse_cache_path(storage) == (storage, "org/my/name", None, "")
    commit = "a" * 40
    snapshot = storage / "snapshots" / commit / "vae" / "x.safetensors"
    assert parse_cache_path(snapshot) == (storage, "org/my/name", commit, "vae/x.safetensors")
    assert parse_cache_path(storage / "blobs" / "abc") is None
    assert parse_cache_path(tmp_path / "plain") is None


def test_plan_prefers_safetensors_and_the_variant(tmp_path):
    listing = [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.safetensors",
        "unet/diffusion_pytorch_model.fp16.safetensors",
        "text_encoder_2/config.json",
        "text_encoder_2/model.safetensors",
        "tokenizer_2/vocab.json",
        "tokenizer_2/merges.txt",
        "tokenizer/vocab.json",
    ]
    plan = plan_files(listing, directory="unet", snapshot=tmp_path)
    # model_index.json is fetched with a component but never required: loading one does not read it.
    assert plan.files == ["unet/config.json", "unet/diffusion_pytorch_model.safetensors"]
    assert plan.optional == ["model_index.json"]
    plan = plan_files(listing, directory="unet", snapshot=tmp_path, variant="fp16")
    assert "unet/diffusion_pytorch_model.fp16.safetensors" in plan.files and len(plan.files) == 2
    plan = plan_files(listing, directory="text_encoder_2", snapshot=tmp_path)
    assert plan.files == [
        "text_encoder_2/config.json",
        "text_encoder_2/model.safetensors",
        "tokenizer_2/merges.txt",
        "tokenizer_2/vocab.json",
    ]


def test_plan_legacy_variant_index(tmp_path):
    listing = [
        "config.json",
        "diffusion_pytorch_model.safetensors.fp16.index.json",
        "diffusion_pytorch_model-00001-of-00002.fp16.safetensors",
        "diffusion_pytorch_model-00002-of-00002.fp16.safetensors",
    ]
    plan = plan_files(listing, snapshot=tmp_path, variant="fp16")
    assert plan.files == sorted(listing)
