"""The adapters on hub repo ids, against the local Hub of tests/hub_server.py (issue #4)."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL, PixArtTransformer2DModel
from transformers import T5EncoderModel

from ckptkit import CheckpointNotFoundError
from ckptkit.adapters import load_dit, load_t5, load_vae


def same_weights(ours, reference) -> None:
    ref_state = reference.state_dict()
    ours_state = ours.state_dict()
    assert ours_state.keys() == ref_state.keys()
    assert all(ours_state[k].dtype == v.dtype and torch.equal(ours_state[k], v) for k, v in ref_state.items())


def test_pipeline_repo_fetches_only_the_text_encoder_and_tokenizer(hub, hub_cache, hub_repos, monkeypatch):
    model, tokenizer = load_t5("org/pipe", cache_dir=hub_cache, with_tokenizer=True)
    same_weights(model, T5EncoderModel.from_pretrained(hub_repos / "org" / "pipe", subfolder="text_encoder"))
    assert tokenizer("a cat").input_ids[:2] == [3, 4]
    folders = {path.split("/")[2] for path in hub.downloads()}
    assert folders <= {"text_encoder", "tokenizer", "model_index.json"}
    assert "text_encoder" in folders

    # Cached now: offline, no request at all.
    hub.reset()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    again = load_t5("org/pipe", cache_dir=hub_cache, local_files_only=True)
    same_weights(again, model)
    assert hub.requests == []


def test_variant_on_a_repo_downloads_only_that_variant(hub, hub_cache, hub_repos):
    vae = load_vae("org/vae", variant="fp16", cache_dir=hub_cache)
    same_weights(vae, AutoencoderKL.from_pretrained(hub_repos / "org" / "vae", variant="fp16"))
    downloaded = {path.split("/", 2)[2] for path in hub.downloads()}
    assert downloaded and all(".fp16" in name or name == "config.json" for name in downloaded)


def test_dit_from_pipeline_repo_and_single_repo(hub, hub_cache, hub_repos):
    dit = load_dit("org/pipe", cache_dir=hub_cache)
    same_weights(
        dit, PixArtTransformer2DModel.from_pretrained(hub_repos / "org" / "pipe", subfolder="transformer")
    )
    assert all(path.split("/")[2] in ("transformer", "model_index.json") for path in hub.downloads())
    fp16 = load_dit("org/pixart", cache_dir=hub_cache, variant="fp16", dtype="fp16")
    same_weights(
        fp16,
        PixArtTransformer2DModel.from_pretrained(
            hub_repos / "org" / "pixart", variant="fp16", torch_dtype=torch.float16
        ),
    )


def test_unknown_repo_is_a_typed_error(hub, hub_cache):
    with pytest.raises(CheckpointNotFoundError):
        load_vae("org/absent", cache_dir=hub_cache)
