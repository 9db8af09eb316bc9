from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every checkpoint layout, written once per session by the real libraries (read-only use)."""
    from tests._models import save_layouts

    return save_layouts(tmp_path_factory.mktemp("layouts"))


@pytest.fixture
def layout_copy(layouts: dict[str, Path], tmp_path: Path):
    """A private copy of one layout, for tests that damage or modify it."""
    import shutil

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(layouts[name], dst, symlinks=True)
        return dst

    return copy


# -- a local Hub for the hub forms of resolve_ckpt_dir (tests/hub_server.py) ----------------------


def _save_tokenizer(directory: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3, "cat": 4}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="</s>"
    )
    fast.save_pretrained(directory)


@pytest.fixture(scope="session")
def hub_repos(layouts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/<org>/<name>[@branch]`` repos built from the saved layouts (read-only use).

    org/pipe: the pipeline layout plus ``tokenizer/`` (text_encoder, vae with fp16, transformer);
    org/t5: sharded T5 with an fp16 variant and tokenizer files; org/vae: sharded VAE + fp16;
    org/pixart: single files default + fp16, and branch ``dev`` = the fp16-only T5;
    org/t5bin: ``pytorch_model.bin``; org/ltx: one named single file at the root, LTX-Video style.
    """
    import shutil

    root = tmp_path_factory.mktemp("hub-repos")
    org = root / "org"
    shutil.copytree(layouts["pipeline"], org / "pipe")
    _save_tokenizer(org / "pipe" / "tokenizer")
    shutil.copytree(layouts["t5_variants"], org / "t5")
    _save_tokenizer(org / "t5")
    shutil.copytree(layouts["vae_variants"], org / "vae")
    shutil.copytree(layouts["pixart"], org / "pixart")
    shutil.copytree(layouts["t5_fp16_only"], org / "pixart@dev")
    shutil.copytree(layouts["t5_bin"], org / "t5bin")
    (org / "ltx").mkdir()
    shutil.copy(
        layouts["pixart"] / "diffusion_pytorch_model.safetensors",
        org / "ltx" / "ltx-video-2b-v0.9.safetensors",
    )
    shutil.copy(layouts["vae_variants"] / "config.json", org / "ltx" / "config.json")
    return root


@pytest.fixture
def hub(hub_repos: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A HubServer on 127.0.0.1 serving ``hub_repos``, with HF_ENDPOINT pointing at it."""
    from huggingface_hub import constants

    from tests.hub_server import HubServer, point_huggingface_hub_at

    server = HubServer(hub_repos).start()
    point_huggingface_hub_at(server, monkeypatch)
    # Calls that name no cache_dir must not write to the user's real cache.
    default_cache = tmp_path / "default-hub-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(default_cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(default_cache))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def hub_cache(tmp_path: Path) -> Path:
    """An empty hub cache folder for one test."""
    path = tmp_path / "hub-cache"
    path.mkdir()
    return path
