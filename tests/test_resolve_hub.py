"""resolve_ckpt_dir's hub forms against a local Hub (tests/hub_server.py) and the real huggingface_hub client.

The cache on disk is written by huggingface_hub itself; every test counts the HTTP requests made.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
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
from tests._hub import HF_DOWNLOAD

REPO_ROOT = Path(__file__).resolve().parents[1]


def _files_under(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def _assert_same_tensors(ckpt: CheckpointDir, original_dir: Path) -> None:
    """The resolved weight files hold exactly the tensors of the served originals."""
    assert ckpt.weight_files
    for path in ckpt.weight_files:
        original = original_dir / path.name
        if ckpt.format == "safetensors":
            got, want = load_file(path), load_file(original)
        else:
            got = torch.load(path, weights_only=True, map_location="cpu")
            want = torch.load(original, weights_only=True, map_location="cpu")
        assert got.keys() == want.keys()
        for name in want:
            assert torch.equal(got[name], want[name]), name


def _snapshot(cache: Path, repo: str, commit: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--")) / "snapshots" / commit


# -- repo ids -------------------------------------------------------------------------------------


def test_repo_id_downloads_default_weights_then_resolves_from_cache_with_no_request(
    hub, hub_cache, hub_repos
):
    ckpt = resolve_ckpt_dir("org/t5", cache_dir=hub_cache)

    commit = hub.commit("org/t5")
    assert ckpt.path == _snapshot(hub_cache, "org/t5", commit)
    assert (ckpt.repo_id, ckpt.revision, ckpt.variant, ckpt.format) == ("org/t5", commit, None, "safetensors")
    assert ckpt.root == hub_cache / "models--org--t5"
    assert [p.name for p in ckpt.weight_files] == [f"model-0000{i}-of-00005.safetensors" for i in range(1, 6)]
    # config, the default index and its shards, the tokenizer files; not the fp16 set.
    served = _files_under(hub_repos / "org" / "t5")
    expected = {f for f in served if "fp16" not in f}
    assert {p.split("/", 2)[2] for p in hub.downloads()} == expected
    assert _files_under(ckpt.path) == expected
    _assert_same_tensors(ckpt, hub_repos / "org" / "t5")

    hub.reset()
    again = resolve_ckpt_dir("org/t5", cache_dir=hub_cache)
    assert hub.requests == []
    assert again.weight_files == ckpt.weight_files


def test_cached_repo_resolves_with_the_hub_unreachable(hub, hub_cache, monkeypatch):
    from huggingface_hub import constants

    resolve_ckpt_dir("org/pipe", subfolder="vae", variant="fp16", cache_dir=hub_cache)
    hub.reset()
    dead = "http://127.0.0.1:9"
    monkeypatch.setattr(constants, "ENDPOINT", dead)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", dead + "/{repo_id}/resolve/{revision}/{filename}"
    )
    # Speed (the 20 ms budget) is measured by benchmarks/resolve_cached.py, not asserted here.
    for _ in range(3):
        ckpt = resolve_ckpt_dir("org/pipe", subfolder="vae", variant="fp16", cache_dir=hub_cache)
    assert hub.requests == []
    assert ckpt.variant == "fp16"


@pytest.mark.parametrize(
    ("subfolder", "variant", "expected"),
    [
        (
            "vae",
            "fp16",
            {
                "model_index.json",
                "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors.index.fp16.json",
                "vae/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
                "vae/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
            },
        ),
        (
            "vae",
            None,
            {
                "model_index.json",
                "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors.index.json",
                *(f"vae/diffusion_pytorch_model-0000{i}-of-00004.safetensors" for i in range(1, 5)),
            },
        ),
        (
            "text_encoder",
            None,
            {
                "model_index.json",
                "text_encoder/config.json",
                "text_encoder/model.safetensors.index.json",
                *(f"text_encoder/model-0000{i}-of-00005.safetensors" for i in range(1, 6)),
                "tokenizer/tokenizer.json",
                "tokenizer/tokenizer_config.json",
            },
        ),
        (
            "transformer",
            None,
            {
                "model_index.json",
                "transformer/config.json",
                "transformer/diffusion_pytorch_model.safetensors",
            },
        ),
    ],
)
def test_pipeline_component_downloads_only_its_files(hub, hub_cache, hub_repos, subfolder, variant, expected):
    ckpt = resolve_ckpt_dir("org/pipe", subfolder=subfolder, variant=variant, cache_dir=hub_cache)

    served = _files_under(hub_repos / "org" / "pipe")
    assert expected <= served  # the expectation names real files of the served repo
    if subfolder == "text_encoder":  # and whatever else the installed transformers saved with the tokenizer
        expected = expected | {f for f in served if f.startswith("tokenizer/") and f.endswith("_map.json")}
    assert {p.split("/", 2)[2] for p in hub.downloads()} == expected
    assert _files_under(_snapshot(hub_cache, "org/pipe", hub.commit("org/pipe"))) == expected
    assert ckpt.subfolder == subfolder and ckpt.variant == variant
    _assert_same_tensors(ckpt, hub_repos / "org" / "pipe" / subfolder)


def test_pipeline_root_without_subfolder_is_the_whole_pipeline(hub, hub_cache, hub_repos):
    ckpt = resolve_ckpt_dir("org/pipe", cache_dir=hub_cache)
    assert list(ckpt.components) == ["text_encoder", "transformer", "vae"]
    assert all(c.variant is None for c in ckpt.components.values())
    # Everything but the vae's fp16 set: configs, default weights, scheduler, tokenizer, model_index.
    served = _files_under(hub_repos / "org" / "pipe")
    assert {p.split("/", 2)[2] for p in hub.downloads()} == {f for f in served if "fp16" not in f}


def test_variant_rules_apply_to_the_listing(hub, hub_cache, hub_repos):
    with pytest.warns(UserWarning, match="no bf16 files"):
        ckpt = resolve_ckpt_dir("org/pixart", variant="bf16", cache_dir=hub_cache)
    assert ckpt.variant is None and ckpt.selection is not None and ckpt.selection.cast_dtype == "bfloat16"
    assert {p.split("/", 2)[2] for p in hub.downloads()} == {
        "config.json",
        "diffusion_pytorch_model.safetensors",
    }
    with pytest.raises(VariantNotFoundError):
        resolve_ckpt_dir("org/pixart", variant="bf16", variant_fallback="error", cache_dir=hub_cache)

    fp16 = resolve_ckpt_dir("org/pixart", variant="fp16", cache_dir=hub_cache)
    assert [p.name for p in fp16.weight_files] == ["diffusion_pytorch_model.fp16.safetensors"]
    _assert_same_tensors(fp16, hub_repos / "org" / "pixart")


def test_bin_repo_resolves_to_torch_weights(hub, hub_cache, hub_repos):
    ckpt = resolve_ckpt_dir("org/t5bin", cache_dir=hub_cache)
    assert ckpt.format == "torch"
    assert [p.name for p in ckpt.weight_files] == ["pytorch_model.bin"]
    _assert_same_tensors(ckpt, hub_repos / "org" / "t5bin")


def test_repo_path_to_a_file_downloads_that_file_only(hub, hub_cache, hub_repos):
    ckpt = resolve_ckpt_dir("org/ltx/ltx-video-2b-v0.9.safetensors", cache_dir=hub_cache)

    assert [p.name for p in ckpt.weight_files] == ["ltx-video-2b-v0.9.safetensors"]
    assert hub.downloads() == {"org/ltx/ltx-video-2b-v0.9.safetensors"}
    _assert_same_tensors(ckpt, hub_repos / "org" / "ltx")


def test_repo_path_to_a_shard_fetches_its_whole_set(hub, hub_cache):
    ckpt = resolve_ckpt_dir(
        "org/pipe/vae/diffusion_pytorch_model.fp16-00002-of-00002.safetensors", cache_dir=hub_cache
    )
    assert len(ckpt.weight_files) == 2 and ckpt.variant == "fp16" and ckpt.subfolder == "vae"
    assert ckpt.index_file is not None and ckpt.index_file.name.endswith(".index.fp16.json")


def test_repo_path_with_folder_is_a_subfolder(hub, hub_cache):
    ckpt = resolve_ckpt_dir("org/pipe/transformer", cache_dir=hub_cache)
    assert ckpt.subfolder == "transformer"
    assert ckpt.path == _snapshot(hub_cache, "org/pipe", hub.commit("org/pipe")) / "transformer"


def test_allow_patterns_override_the_computed_files(hub, hub_cache):
    ckpt = resolve_ckpt_dir("org/vae", cache_dir=hub_cache, allow_patterns=["*.json", "*.safetensors"])
    served = {f"org/vae/{f}" for f in _files_under(_snapshot(hub_cache, "org/vae", hub.commit("org/vae")))}
    assert hub.downloads() == served
    assert len(served) == 9  # config, two indexes, 4 + 2 shards
    assert ckpt.variant is None


# -- revisions ------------------------------------------------------------------------------------


def test_branch_and_commit_revisions(hub, hub_cache):
    dev = resolve_ckpt_dir("org/pixart", revision="dev", variant="fp16", cache_dir=hub_cache)
    commit = hub.commit("org/pixart", "dev")
    assert dev.revision == commit
    assert (hub_cache / "models--org--pixart" / "refs" / "dev").read_text() == commit
    assert dev.weight_files[0].name.startswith("model.fp16-")

    hub.reset()
    by_commit = resolve_ckpt_dir("org/pixart", revision=commit, variant="fp16", cache_dir=hub_cache)
    assert hub.requests == [] and by_commit.weight_files == dev.weight_files


def test_branch_moved_on_after_caching(hub_cache, hub_repos, tmp_path):
    """A folder absent from the cached ``main`` is looked up on the Hub: the branch may have moved on."""
    from tests.hub_server import HubServer

    root = tmp_path / "repos"
    shutil.copytree(hub_repos / "org" / "t5", root / "org" / "t5")
    with HubServer(root) as own:  # a Hub of its own, reached through endpoint=
        first = resolve_ckpt_dir("org/t5", cache_dir=hub_cache, endpoint=own.url)
        shutil.copytree(hub_repos / "org" / "pixart", root / "org" / "t5" / "extra")
        own.reset()
        ckpt = resolve_ckpt_dir(
            "org/t5", subfolder="extra", variant="fp16", cache_dir=hub_cache, endpoint=own.url
        )
        assert ckpt.revision == own.commit("org/t5") != first.revision
        assert ckpt.weight_files[0].name == "diffusion_pytorch_model.fp16.safetensors"
        assert {p.split("/", 2)[2] for p in own.downloads()} == {
            "extra/config.json",
            "extra/diffusion_pytorch_model.fp16.safetensors",
        }


def test_missing_repo_revision_subfolder_and_file(hub, hub_cache):
    with pytest.raises(CheckpointNotFoundError, match="org/nope was not found"):
        resolve_ckpt_dir("org/nope", cache_dir=hub_cache)
    with pytest.raises(CheckpointNotFoundError, match="revision 'v9' does not exist"):
        resolve_ckpt_dir("org/t5", revision="v9", cache_dir=hub_cache)
    with pytest.raises(CheckpointNotFoundError, match="revision"):
        resolve_ckpt_dir("org/t5", revision="0" * 40, cache_dir=hub_cache)
    with pytest.raises(CheckpointNotFoundError, match=r"no folder 'unet'.*text_encoder, transformer, vae"):
        resolve_ckpt_dir("org/pipe", subfolder="unet", cache_dir=hub_cache)
    with pytest.raises(CheckpointNotFoundError, match=r"no file 'nope\.safetensors'"):
        resolve_ckpt_dir("org/ltx/nope.safetensors", cache_dir=hub_cache)
    assert hub.downloads() == set()


# -- hub cache paths ------------------------------------------------------------------------------


def test_cache_repo_folder_and_snapshot_paths(hub, hub_cache, hub_repos):
    first = resolve_ckpt_dir("org/pipe", subfolder="vae", variant="fp16", cache_dir=hub_cache)
    hub.reset()
    storage = hub_cache / "models--org--pipe"
    snapshot = first.path.parent

    from_folder = resolve_ckpt_dir(storage, subfolder="vae", variant="fp16")
    from_snapshot = resolve_ckpt_dir(snapshot, subfolder="vae", variant="fp16")
    from_inside = resolve_ckpt_dir(snapshot / "vae", variant="fp16")
    from_file = resolve_ckpt_dir(first.weight_files[0])
    assert hub.requests == []
    for ckpt in (from_folder, from_snapshot, from_inside, from_file):
        # The snapshot path is kept (not realpath-ed into blobs/), with the repo folder as root.
        assert ckpt.path == snapshot / "vae"
        assert ckpt.weight_files == first.weight_files
        assert (ckpt.repo_id, ckpt.revision, ckpt.root, ckpt.subfolder) == (
            "org/pipe",
            hub.commit("org/pipe"),
            storage,
            "vae",
        )
        _assert_same_tensors(ckpt, hub_repos / "org" / "pipe" / "vae")
    assert all(p.is_symlink() and "blobs" not in str(p) for p in from_folder.weight_files)


def test_cache_folder_by_commit_and_without_refs(hub, hub_cache):
    first = resolve_ckpt_dir("org/t5", cache_dir=hub_cache)
    storage = hub_cache / "models--org--t5"
    hub.reset()
    assert resolve_ckpt_dir(storage, revision=first.revision).path == first.path
    (storage / "refs" / "main").unlink()
    # A repo folder with one snapshot and no refs/main: that snapshot.
    assert resolve_ckpt_dir(storage, local_files_only=True).path == first.path
    assert hub.requests == []


def test_cache_without_tree_listing_resolves_from_its_files(hub, hub_cache):
    first = resolve_ckpt_dir("org/vae", variant="fp16", cache_dir=hub_cache)
    # as a cache written by hf_hub_download alone (huggingface_hub < 1.22 writes no trees/ at all)
    shutil.rmtree(hub_cache / "models--org--vae" / "trees", ignore_errors=True)
    hub.reset()
    again = resolve_ckpt_dir("org/vae", variant="fp16", cache_dir=hub_cache)
    assert hub.requests == [] and again.weight_files == first.weight_files


def test_local_dir_download_is_a_plain_directory(hub, tmp_path, hub_repos):
    from huggingface_hub import snapshot_download

    local = tmp_path / "local"
    snapshot_download("org/pipe", local_dir=local, allow_patterns=["model_index.json", "vae/*"])
    assert (local / ".cache" / "huggingface").is_dir()
    hub.reset()
    ckpt = resolve_ckpt_dir(local, subfolder="vae", variant="fp16")
    assert hub.requests == [] and ckpt.path == local / "vae" and ckpt.variant == "fp16"
    _assert_same_tensors(ckpt, hub_repos / "org" / "pipe" / "vae")


# -- damaged caches -------------------------------------------------------------------------------


def test_missing_shard_in_cache(hub, hub_cache, monkeypatch):
    first = resolve_ckpt_dir("org/vae", cache_dir=hub_cache)
    shard = first.weight_files[2]
    shard.unlink()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reset()
    with pytest.raises(IncompleteCheckpointError) as info:
        resolve_ckpt_dir("org/vae", cache_dir=hub_cache)
    message = str(info.value)
    assert shard.name in message and f"{HF_DOWNLOAD} org/vae" in message
    assert hub.requests == []

    monkeypatch.delenv("HF_HUB_OFFLINE")
    again = resolve_ckpt_dir("org/vae", cache_dir=hub_cache)
    # Only that shard is asked for; its blob is still there, so huggingface_hub re-links it without a GET.
    asked = {path.rsplit("/", 1)[1] for method, path in hub.requests if "/resolve/" in path}
    assert asked == {shard.name} and hub.downloads() == set()
    assert again.weight_files == first.weight_files and shard.exists()


def test_dangling_link_and_interrupted_blob(hub, hub_cache, hub_repos):
    first = resolve_ckpt_dir("org/vae", cache_dir=hub_cache)
    dangling, interrupted = first.weight_files[0], first.weight_files[1]
    os.unlink(dangling.resolve())  # the blob is gone, the snapshot link dangles
    blob = interrupted.resolve()
    data = blob.read_bytes()
    interrupted.unlink()
    blob.unlink()
    Path(f"{blob}.0a1b2c3d.incomplete").write_bytes(data[:1000])  # what a killed download leaves

    with pytest.raises(IncompleteCheckpointError) as info:
        resolve_ckpt_dir("org/vae", cache_dir=hub_cache, local_files_only=True)
    assert dangling.name in str(info.value) and interrupted.name in str(info.value)
    assert "interrupted downloads left *.incomplete files" in str(info.value)

    hub.reset()
    again = resolve_ckpt_dir("org/vae", cache_dir=hub_cache)
    assert hub.downloads() == {f"org/vae/{dangling.name}", f"org/vae/{interrupted.name}"}
    _assert_same_tensors(again, hub_repos / "org" / "vae")


# -- offline --------------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "local_files_only"])
def test_offline_miss_makes_no_request_and_says_how_to_fetch(hub, hub_cache, monkeypatch, how):
    kwargs = {}
    if how == "local_files_only":
        kwargs["local_files_only"] = True
    else:
        monkeypatch.setenv(how, "1")
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_ckpt_dir("org/pipe", subfolder="vae", variant="fp16", cache_dir=hub_cache, **kwargs)
    message = str(info.value)
    assert hub.requests == []
    assert str(hub_cache / "models--org--pipe" / "refs" / "main") in message
    include = "--include " if HF_DOWNLOAD == "hf download" else ""  # huggingface-cli: one --include
    assert (
        f"{HF_DOWNLOAD} org/pipe --include 'vae/*.json' {include}'vae/*.fp16*.safetensors' --cache-dir {hub_cache}"
        in message
    )
    assert f"ckptkit resolve org/pipe/vae --variant fp16 --cache-dir {hub_cache}" in message


def test_offline_miss_command_fetches_what_was_missing(hub, hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_ckpt_dir("org/pipe", subfolder="transformer", cache_dir=hub_cache)
    command = str(info.value).split("fetch it with: `", 1)[1].split("`", 1)[0]
    words = shlex.split(command)  # hf download ... (huggingface-cli download ... before 0.34)
    hf = Path(sys.executable).with_name(words[0])
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    subprocess.run([str(hf), *words[1:]], check=True, env=env, capture_output=True, timeout=120)
    hub.reset()
    ckpt = resolve_ckpt_dir("org/pipe", subfolder="transformer", cache_dir=hub_cache)
    assert hub.requests == [] and ckpt.subfolder == "transformer"


def test_offline_with_partial_variant_in_cache_uses_what_is_there(hub, hub_cache, monkeypatch):
    resolve_ckpt_dir("org/pixart", variant="fp16", cache_dir=hub_cache)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reset()
    import huggingface_hub

    if hasattr(huggingface_hub, "get_cached_repo_tree"):
        # The default weights are listed by the cached tree but not downloaded: offline, that is a miss.
        with pytest.raises(IncompleteCheckpointError, match=r"diffusion_pytorch_model\.safetensors"):
            resolve_ckpt_dir("org/pixart", cache_dir=hub_cache)
    else:
        # huggingface_hub < 1.22 records no listing: offline, the cache shows only the fp16 files,
        # which load as the only weights there, with the variant warning.
        with pytest.warns(UserWarning, match="fp16"):
            ckpt = resolve_ckpt_dir("org/pixart", cache_dir=hub_cache)
        assert ckpt.variant == "fp16"
    assert hub.requests == []


def test_not_a_path_nor_a_repo_id(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="not a hub repo id"):
        resolve_ckpt_dir(tmp_path / "missing")
    with pytest.raises(CheckpointNotFoundError):
        resolve_ckpt_dir("./relative/missing")


def test_hf_home_decides_the_cache(hub, tmp_path):
    """A fresh process reads HF_HOME as huggingface_hub does: the cache is $HF_HOME/hub."""
    home = tmp_path / "home"
    env = {
        **os.environ,
        "HF_HOME": str(home),
        "PYTHONPATH": str(REPO_ROOT),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    run = [sys.executable, "-m", "ckptkit", "resolve", "org/pipe", "--subfolder", "transformer"]
    out = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == str(
        home / "hub" / "models--org--pipe" / "snapshots" / hub.commit("org/pipe") / "transformer"
    )
    hub.reset()
    offline = subprocess.run(
        [*run, "--offline"], env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120
    )
    assert offline.returncode == 0 and offline.stdout == out and hub.requests == []
    # HF_HUB_CACHE wins over HF_HOME, as in huggingface_hub.constants.
    cache = tmp_path / "explicit-cache"
    out = subprocess.run(
        run, env={**env, "HF_HUB_CACHE": str(cache)}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.startswith(str(cache / "models--org--pipe" / "snapshots"))


def test_server_answers_ranges_as_the_hub_does(hub, hub_repos):
    """``http_get`` resumes a broken transfer with ``Range``; the test Hub honours it."""
    import urllib.request

    url = f"{hub.url}/org/ltx/resolve/main/ltx-video-2b-v0.9.safetensors"
    request = urllib.request.Request(url, headers={"Range": "bytes=100-"})
    with urllib.request.urlopen(request, timeout=10) as response:
        body = response.read()
        assert response.status == 206
        assert response.headers["X-Repo-Commit"] == hub.commit("org/ltx")
    data = (hub_repos / "org" / "ltx" / "ltx-video-2b-v0.9.safetensors").read_bytes()
    assert body == data[100:]
    assert response.headers["Content-Range"] == f"bytes 100-{len(data) - 1}/{len(data)}"
    assert hub.ranges == [("ltx-video-2b-v0.9.safetensors", "bytes=100-")]
