"""Every cache the user already has: cache_dir (one or a list), HF_HUB_CACHE, CKPTKIT_CACHE_PATH.

The model is downloaded once by the real client from tests/hub_server.py; every other call must
find it where it is, and the test counts the requests to the server.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ckptkit import CheckpointNotFoundError, resolve_ckpt_dir


def _storage(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


def test_model_in_hf_hub_cache_is_found_when_cache_dir_names_another_empty_cache(hub, tmp_path):
    from huggingface_hub import constants

    first = resolve_ckpt_dir("org/t5")  # downloads into HF_HUB_CACHE
    default = Path(constants.HF_HUB_CACHE)
    assert first.cache_dir == default
    empty = tmp_path / "project-cache"
    empty.mkdir()
    hub.reset()

    ckpt = resolve_ckpt_dir("org/t5", cache_dir=empty)
    assert hub.requests == []
    assert ckpt.cache_dir == default and ckpt.weight_files == first.weight_files
    assert list(empty.iterdir()) == []  # used in place, not copied


@pytest.mark.parametrize("symlinks", [True, False], ids=["links", "no-links"])
def test_model_partly_in_another_cache_downloads_only_the_missing_files(hub, tmp_path, symlinks):
    from huggingface_hub import constants
    from safetensors.torch import load_file

    default = Path(constants.HF_HUB_CACHE)
    first = resolve_ckpt_dir("org/t5")  # into HF_HUB_CACHE
    shards = sorted(p for p in first.weight_files)
    assert len(shards) > 2
    if not symlinks:  # a cache written with HF_HUB_DISABLE_SYMLINKS: real files in the snapshot
        for pointer in first.path.iterdir():
            blob = pointer.resolve()
            pointer.unlink()
            blob.rename(pointer)
    # An interrupted download: one shard is not there.
    gone = shards[-1]
    gone.unlink(missing_ok=True)
    hub.reset()

    project = tmp_path / "project-cache"
    ckpt = resolve_ckpt_dir("org/t5", cache_dir=project)

    assert hub.downloads() == {f"org/t5/{gone.name}"}
    assert ckpt.cache_dir == project and [p.name for p in ckpt.weight_files] == [p.name for p in shards]
    for path in ckpt.weight_files[:-1]:  # linked into the project cache: the same file, not a copy
        assert path.resolve().stat().st_ino == (first.path / path.name).resolve().stat().st_ino
    for path in ckpt.weight_files:
        assert load_file(path).keys()
    assert not any(default.rglob(gone.name))  # the other cache is left as it was


def test_ckptkit_cache_path_and_a_list_of_caches(hub, tmp_path, monkeypatch):
    other = tmp_path / "team-cache"
    resolve_ckpt_dir("org/vae", cache_dir=other)
    empty_a, empty_b = tmp_path / "a", tmp_path / "b"
    hub.reset()

    monkeypatch.setenv("CKPTKIT_CACHE_PATH", os.pathsep.join([str(tmp_path / "nowhere"), str(other)]))
    ckpt = resolve_ckpt_dir("org/vae", cache_dir=empty_a)
    assert hub.requests == [] and ckpt.cache_dir == other
    monkeypatch.delenv("CKPTKIT_CACHE_PATH")

    listed = resolve_ckpt_dir("org/vae", cache_dir=[empty_a, other, empty_b])
    assert hub.requests == [] and listed.cache_dir == other
    # Nothing found anywhere: the download goes to the first cache named.
    fresh = resolve_ckpt_dir("org/t5", cache_dir=[empty_a, other])
    assert fresh.cache_dir == empty_a and _storage(empty_a, "org/t5").is_dir()
    assert not _storage(other, "org/t5").exists()


def test_offline_miss_lists_every_place_and_fetches_only_what_is_needed(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    extra = tmp_path / "extra"
    monkeypatch.setenv("CKPTKIT_CACHE_PATH", str(extra))
    mine = tmp_path / "mine"
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_ckpt_dir("org/t5", variant="fp16", cache_dir=mine, local_files_only=True)
    message = str(info.value)
    assert hub.requests == []
    for cache in (mine, Path(constants.HF_HUB_CACHE), extra):
        assert str(_storage(cache, "org/t5") / "refs" / "main") in message
    command = message.split("fetch it with: `", 1)[1].split("`", 1)[0]
    # Not a pipeline: no subfolder guessed, no model_index.json; the variant's safetensors only.
    assert "model_index" not in command and "/*" not in command
    assert "'*.fp16*.safetensors'" in command

    words = shlex.split(command)  # hf download ... (huggingface-cli download ... before 0.34)
    hf = Path(sys.executable).with_name(words[0])
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    subprocess.run([str(hf), *words[1:]], check=True, env=env, capture_output=True, timeout=120)
    assert not any(".bin" in p or ("fp16" not in p and p.endswith(".safetensors")) for p in hub.downloads())
    hub.reset()
    ckpt = resolve_ckpt_dir("org/t5", variant="fp16", cache_dir=mine, local_files_only=True)
    assert ckpt.variant == "fp16" and ckpt.cache_dir == mine and hub.requests == []


def test_allow_patterns_reuse_what_another_cache_holds(hub, tmp_path):
    """Files the patterns fetch beyond the computed minimum (the fp16 shards here) are linked too."""
    patterns = ["*.safetensors", "*.json"]
    first = resolve_ckpt_dir("org/t5", allow_patterns=patterns)  # into HF_HUB_CACHE
    fetched = {p.name for p in first.path.iterdir()}
    assert any(".fp16." in name for name in fetched)  # more than the default weight set
    gone = sorted(first.weight_files)[-1]
    gone.unlink()
    hub.reset()

    ckpt = resolve_ckpt_dir("org/t5", cache_dir=tmp_path / "project-cache", allow_patterns=patterns)

    assert hub.downloads() == {f"org/t5/{gone.name}"}
    assert {p.name for p in ckpt.path.iterdir()} == fetched
