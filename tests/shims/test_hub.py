"""The shims on hub repos, against the local Hub of tests/hub_server.py (issue #4)."""

from __future__ import annotations

import torch

from ckptkit.shims.ltx import create_transformer, load_text_encoder, read_single_file
from ckptkit.shims.opensora import T5Encoder, load_checkpoint
from tests._versions import diffusers_class
from tests.shims.test_opensora import TinySTDiT, assert_loaded, trained_state


def cached_repos(cache) -> set[str]:
    return {p.name for p in cache.iterdir() if p.name.startswith("models--")}


def test_open_sora_t5_and_checkpoint_honour_cache_dir(hub, hub_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # "org/t5" must not be taken for a local path
    encoder = T5Encoder(from_pretrained="org/t5", device="cpu", cache_dir=hub_cache)
    assert encoder.encode(["a cat"])["y"].shape == (1, 1, 120, 32)
    model = TinySTDiT()
    load_checkpoint(model, "org/OpenSora-STDiT/model.safetensors", cache_dir=hub_cache)
    assert_loaded(model, trained_state())
    assert cached_repos(hub_cache) == {"models--org--t5", "models--org--OpenSora-STDiT"}
    assert not (tmp_path / "default-hub-cache").exists() or not any(
        (tmp_path / "default-hub-cache").iterdir()
    )


def test_ltx_text_encoder_fetches_only_its_folders(hub, hub_cache):
    encoder, tokenizer = load_text_encoder("org/PixArt-XL-2-1024-MS", cache_dir=hub_cache)
    assert tokenizer("a cat").input_ids == [3, 4, 1]
    assert type(encoder).__name__ == "T5EncoderModel"
    folders = {path.split("/")[2] for path in hub.downloads()}
    assert "text_encoder" in folders and "tokenizer" in folders
    assert not folders & {"transformer", "vae", "scheduler"}


def test_ltx_single_file_from_repo(hub, hub_cache):
    model_class = diffusers_class("LTXVideoTransformer3DModel")
    single = read_single_file("org/LTX-Video/ltxv-tiny-bf16.safetensors", cache_dir=hub_cache)
    assert single.ckpt.repo_id == "org/LTX-Video"
    assert hub.downloads() == {"org/LTX-Video/ltxv-tiny-bf16.safetensors"}
    model = create_transformer(
        "org/LTX-Video/ltxv-tiny-bf16.safetensors",
        "keep",
        model_class=model_class,
        cache_dir=hub_cache,
    )
    assert model.proj_in.weight.dtype == torch.bfloat16
