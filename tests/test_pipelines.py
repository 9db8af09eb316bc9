"""Whole diffusers pipelines as one checkpoint, served by tests/hub_server.py to the real client.

The pipeline is a real tiny ``PixArtAlphaPipeline`` (T5 text encoder, a tokenizer built with
``tokenizers``, a DPM-Solver scheduler) saved by diffusers' own ``save_pretrained``; the proof that a
rewrite is right is diffusers' ``DiffusionPipeline.from_pretrained`` and an inference run that gives
the same images.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ckptkit import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    HubUnreachableError,
    IncompleteCheckpointError,
    load_sharded,
    materialize,
    resave,
    resolve_ckpt_dir,
    verify_checkpoint,
)
from tests._models import build_pixart, build_t5, build_vae
from tests._subprocess import REPO

PIXART = "acme/tiny-pixart"
SDXL = "acme/tiny-sdxl"


def _tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5TokenizerFast

    vocab = ["<pad>", "</s>", "<unk>", "a", "cat", "on", "mat"]
    tokenizer = Tokenizer(models.Unigram([(t, -1.0) for t in vocab], unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return T5TokenizerFast(
        tokenizer_object=tokenizer, unk_token="<unk>", pad_token="<pad>", eos_token="</s>", extra_ids=0
    )


def save_tiny_pixart(directory: Path) -> Path:
    """A PixArt-alpha pipeline repo: default and fp16 weights, plus the original ``.pth`` at its root."""
    from diffusers import DPMSolverMultistepScheduler, PixArtAlphaPipeline

    pipe = PixArtAlphaPipeline(
        tokenizer=_tokenizer(),
        text_encoder=build_t5(),
        vae=build_vae(),
        transformer=build_pixart(),
        scheduler=DPMSolverMultistepScheduler(),
    )
    pipe.save_pretrained(directory, max_shard_size="20KB")
    pipe.save_pretrained(directory, variant="fp16", max_shard_size="20KB")
    # PixArt-alpha/PixArt-XL-2-1024-MS keeps the training checkpoint beside the pipeline.
    torch.save({"state_dict": pipe.transformer.state_dict()}, directory / "PixArt-XL-2-1024-MS.pth")
    return directory


def save_tiny_sdxl(directory: Path) -> Path:
    """An SDXL-shaped repo: components, and one single file of them all at the root."""
    build_pixart().save_pretrained(directory / "unet")
    build_vae().save_pretrained(directory / "vae", max_shard_size="50KB")
    build_t5().save_pretrained(directory / "text_encoder")
    _tokenizer().save_pretrained(directory / "tokenizer")
    (directory / "scheduler").mkdir()
    (directory / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "EulerDiscreteScheduler"})
    )
    (directory / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "StableDiffusionXLPipeline",
                "scheduler": ["diffusers", "EulerDiscreteScheduler"],
                "text_encoder": ["transformers", "T5EncoderModel"],
                "tokenizer": ["transformers", "T5TokenizerFast"],
                "unet": ["diffusers", "PixArtTransformer2DModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            }
        )
    )
    single = {}
    for prefix, folder in (("model.diffusion_model.", "unet"), ("first_stage_model.", "vae")):
        for path in sorted((directory / folder).glob("*.safetensors")):
            single.update({prefix + k: v for k, v in load_file(path).items()})
    save_file(single, directory / "sd_xl_base_1.0.safetensors")
    return directory


@pytest.fixture(scope="session")
def pipeline_repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pipeline-repos")
    save_tiny_pixart(root / "acme" / "tiny-pixart")
    save_tiny_sdxl(root / "acme" / "tiny-sdxl")
    return root


@pytest.fixture(scope="session")
def hub_repos(hub_repos: Path, pipeline_repos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conftest's repos (org/...) and the pipelines above (acme/...), served together."""
    served = tmp_path_factory.mktemp("served")
    shutil.copytree(hub_repos / "org", served / "org")
    shutil.copytree(pipeline_repos / "acme", served / "acme")
    return served


def _files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def _images(directory: Path, **kwargs) -> torch.Tensor:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(directory, torch_dtype=torch.float32, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(
        "a cat on a mat",
        num_inference_steps=2,
        height=16,
        width=16,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
        use_resolution_binning=False,
        max_sequence_length=8,
        clean_caption=False,
    )
    return out.images


# -- resolve --------------------------------------------------------------------------------------


def test_pipeline_repo_id_resolves_every_component_downloading_only_the_variant(hub, hub_cache, hub_repos):
    ckpt = resolve_ckpt_dir(PIXART, variant="fp16", cache_dir=hub_cache)

    assert list(ckpt.components) == ["text_encoder", "transformer", "vae"]
    assert {c.variant for c in ckpt.components.values()} == {"fp16"}
    assert ckpt.cache_dir == hub_cache and ckpt.repo_id == PIXART
    served = _files(hub_repos / "acme" / "tiny-pixart")
    # Each component's fp16 set and config, the scheduler and tokenizer whole, model_index.json;
    # not the default weights and not the training .pth at the root.
    expected = {
        f
        for f in served
        if f == "model_index.json"
        or f.startswith(("scheduler/", "tokenizer/"))
        or ("/" in f and (f.endswith("config.json") or ".fp16" in f))
    }
    assert {p.split("/", 2)[2] for p in hub.downloads()} == expected
    assert ckpt.weight_files == [p for c in ckpt.components.values() for p in c.weight_files]

    hub.reset()
    again = resolve_ckpt_dir(PIXART, variant="fp16", cache_dir=hub_cache)
    assert hub.requests == [] and again.weight_files == ckpt.weight_files

    # components= narrows it; loading asks for one model and says which there are.
    only = resolve_ckpt_dir(PIXART, variant="fp16", components=["vae"], cache_dir=hub_cache)
    assert list(only.components) == ["vae"] and hub.requests == []
    with pytest.raises(
        CheckpointNotFoundError, match="pass subfolder= one of: text_encoder, transformer, vae"
    ):
        load_sharded(ckpt)


def test_components_download_only_what_was_asked(hub, hub_cache, hub_repos):
    ckpt = resolve_ckpt_dir(PIXART, components=["transformer"], cache_dir=hub_cache)
    assert list(ckpt.components) == ["transformer"]
    served = _files(hub_repos / "acme" / "tiny-pixart")
    expected = {f for f in served if f.startswith("transformer/") and ".fp16" not in f}
    assert len(expected) > 3
    assert {p.split("/", 2)[2] for p in hub.downloads()} == expected | {"model_index.json"}
    with pytest.raises(CheckpointNotFoundError, match="not a pipeline"):
        resolve_ckpt_dir("org/t5", components=["vae"], cache_dir=hub_cache)
    with pytest.raises(ValueError, match="not both"):
        resolve_ckpt_dir(PIXART, subfolder="vae", components=["vae"], cache_dir=hub_cache)


@pytest.mark.parametrize("symlinks", [True, False], ids=["links", "HF_HUB_DISABLE_SYMLINKS"])
def test_component_downloaded_alone_resolves_offline(hub, hub_cache, hub_repos, monkeypatch, symlinks):
    from huggingface_hub import constants, snapshot_download

    if hasattr(constants, "HF_HUB_DISABLE_SYMLINKS"):
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_SYMLINKS", not symlinks)
    elif not symlinks:  # huggingface_hub < 1.0: the same mode, taken on a file system without links
        from huggingface_hub import file_download

        monkeypatch.setattr(file_download, "are_symlinks_supported", lambda *args, **kwargs: False)
    # hf download acme/tiny-pixart --include "vae/*": no model_index.json. One download at a time:
    # this repo's fp16 shards are byte copies of the fp32 ones, and without symlinks huggingface_hub's
    # parallel workers race on the one blob two identical files share (one moves it away while the
    # other copies it: FileNotFoundError, about 1 run in 20).
    snapshot_download(PIXART, cache_dir=hub_cache, allow_patterns=["vae/*"], max_workers=1)
    snapshot = hub_cache / "models--acme--tiny-pixart" / "snapshots" / hub.commit(PIXART)
    assert not (snapshot / "model_index.json").exists()
    assert (snapshot / "vae" / "config.json").is_symlink() is symlinks
    hub.reset()

    vae = resolve_ckpt_dir(PIXART, subfolder="vae", local_files_only=True, cache_dir=hub_cache)
    assert vae.subfolder == "vae" and vae.variant is None
    fp16 = resolve_ckpt_dir(
        PIXART, subfolder="vae", variant="fp16", local_files_only=True, cache_dir=hub_cache
    )
    assert fp16.variant == "fp16"
    state = load_sharded(vae)
    want = {}
    for path in (hub_repos / "acme" / "tiny-pixart" / "vae").glob("diffusion_pytorch_model-*.safetensors"):
        want.update(load_file(path))
    assert state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)

    # A component never downloaded is not found; one with a file missing is incomplete.
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_ckpt_dir(PIXART, subfolder="transformer", local_files_only=True, cache_dir=hub_cache)
    assert not isinstance(info.value, IncompleteCheckpointError)
    # The whole pipeline, offline, with only vae/ here: incomplete, and it says what to fetch.
    import huggingface_hub

    if hasattr(huggingface_hub, "get_cached_repo_tree"):
        with pytest.raises(IncompleteCheckpointError, match=r"model_index\.json"):
            resolve_ckpt_dir(PIXART, local_files_only=True, cache_dir=hub_cache)
    else:  # huggingface_hub < 1.22 keeps no listing: nothing here says the repo is a pipeline
        with pytest.raises(CheckpointNotFoundError, match="subfolder="):
            resolve_ckpt_dir(PIXART, local_files_only=True, cache_dir=hub_cache)
    shard = sorted((snapshot / "vae").glob("diffusion_pytorch_model-0000*-of-*.safetensors"))[0]
    shard.unlink()
    with pytest.raises(IncompleteCheckpointError, match=shard.name):
        resolve_ckpt_dir(PIXART, subfolder="vae", local_files_only=True, cache_dir=hub_cache)
    assert hub.requests == []


# -- resave, materialize, verify by repo id ---------------------------------------------------------


def test_pipeline_repo_resaves_and_loads_with_diffusers_giving_the_same_images(hub, hub_repos, tmp_path):
    original = hub_repos / "acme" / "tiny-pixart"
    out = resave(PIXART, tmp_path / "resharded", max_shard_size="30KB")

    assert list(out.components) == ["text_encoder", "transformer", "vae"]
    files = _files(tmp_path / "resharded")
    assert {"model_index.json", "scheduler/scheduler_config.json", "tokenizer/tokenizer.json"} <= files
    assert not any(f.endswith(".pth") or ".fp16" in f for f in files)
    assert torch.equal(_images(tmp_path / "resharded"), _images(original))

    fp16 = resave(PIXART, tmp_path / "fp16", max_shard_size=None, variant="fp16")
    assert {c.variant for c in fp16.components.values()} == {"fp16"}
    assert all(len(c.weight_files) == 1 for c in fp16.components.values())
    assert torch.equal(_images(tmp_path / "fp16", variant="fp16"), _images(original, variant="fp16"))

    # dtype= casts every component; diffusers still loads it.
    bf16 = resave(tmp_path / "resharded", tmp_path / "bf16", dtype="bf16", max_shard_size=None)
    for part in bf16.components.values():
        assert {t.dtype for t in load_file(part.weight_files[0]).values()} == {torch.bfloat16}
    assert _images(tmp_path / "bf16").shape == (1, 3, 16, 16)


def test_resave_components_downloads_and_writes_only_those(hub, hub_repos, tmp_path):
    out = resave(PIXART, tmp_path / "two", components=["vae", "transformer"])

    assert list(out.components) == ["transformer", "vae"]
    served = _files(hub_repos / "acme" / "tiny-pixart")
    expected = {f for f in served if f.startswith(("transformer/", "vae/")) and ".fp16" not in f}
    assert {p.split("/", 2)[2] for p in hub.downloads()} == expected | {"model_index.json"}
    files = _files(tmp_path / "two")
    assert {f.split("/")[0] for f in files if "/" in f} == {"transformer", "vae"}
    assert "model_index.json" in files and not any(f.endswith(".pth") for f in files)
    for name in ("transformer", "vae"):
        source = resolve_ckpt_dir(hub_repos / "acme" / "tiny-pixart", subfolder=name)
        want = {k: v for f in source.weight_files for k, v in load_file(f).items()}
        got = {k: v for f in out.components[name].weight_files for k, v in load_file(f).items()}
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), name

    # The CLI flag; a local pipeline with a root single file writes the chosen component only.
    sdxl = hub_repos / "acme" / "tiny-sdxl"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ckptkit",
            "resave",
            str(sdxl),
            str(tmp_path / "vae-only"),
            "--components",
            "vae",
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    files = _files(tmp_path / "vae-only")
    assert {f.split("/")[0] for f in files if "/" in f} == {"vae"}
    assert "sd_xl_base_1.0.safetensors" not in files and "model_index.json" in files

    # Not a pipeline, or with subfolder=: refused, nothing written.
    with pytest.raises(CheckpointNotFoundError, match="not a pipeline"):
        resave(hub_repos / "org" / "t5", tmp_path / "t5", components=["vae"])
    with pytest.raises(ValueError, match="not both"):
        resave(sdxl, tmp_path / "both", subfolder="vae", components=["vae"])
    assert not (tmp_path / "t5").exists() and not (tmp_path / "both").exists()


def test_materialize_components_by_repo_id_downloads_and_copies_only_those(hub, hub_repos, tmp_path):
    copy = materialize(PIXART, tmp_path / "vae", components="vae", manifest=False)
    served = _files(hub_repos / "acme" / "tiny-pixart")
    expected = {f for f in served if f.startswith("vae/") and ".fp16" not in f}
    assert len(expected) > 2
    assert {p.split("/", 2)[2] for p in hub.downloads()} == expected | {"model_index.json"}
    assert _files(copy) == expected | {"model_index.json"}


def test_pipeline_repo_materializes_and_verifies_by_repo_id(hub, tmp_path):
    from huggingface_hub import constants

    resolve_ckpt_dir(PIXART)  # into HF_HUB_CACHE
    copy = materialize(PIXART, tmp_path / "copy")
    assert not any(p.is_symlink() for p in copy.rglob("*"))
    assert {"model_index.json", "vae/config.json", "scheduler/scheduler_config.json"} <= _files(copy)
    assert list(resolve_ckpt_dir(copy).components) == ["text_encoder", "transformer", "vae"]

    report = verify_checkpoint(PIXART, checksums=True)
    assert report.ok and len(report.verified) >= 10
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_CACHE": constants.HF_HUB_CACHE,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    run = subprocess.run(
        [sys.executable, "-m", "ckptkit", "verify", PIXART, "--checksums"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    count = len(report.files)
    assert f"{count} files, {count} verified by hash" in run.stdout

    listed = subprocess.run(
        [sys.executable, "-m", "ckptkit", "resolve", PIXART, "--components", "vae,transformer", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    payload = json.loads(listed.stdout)
    assert sorted(payload["components"]) == ["transformer", "vae"]
    assert payload["cache_dir"] == constants.HF_HUB_CACHE


def test_root_pth_beside_a_pipeline_takes_the_pipeline(layouts, tmp_path, pipeline_repos):
    # Locally too: the training .pth at the root is neither read nor copied.
    out = resave(pipeline_repos / "acme" / "tiny-pixart", tmp_path / "out", max_shard_size=None)
    assert list(out.components) == ["text_encoder", "transformer", "vae"]
    assert not (tmp_path / "out" / "PixArt-XL-2-1024-MS.pth").exists()


def test_sdxl_shaped_root_single_file_is_one_more_weight_set(hub, hub_cache, tmp_path, pipeline_repos):
    source = pipeline_repos / "acme" / "tiny-sdxl"
    ckpt = resolve_ckpt_dir(source)
    assert list(ckpt.components) == ["text_encoder", "unet", "vae", "sd_xl_base_1.0"]
    assert ckpt.components["sd_xl_base_1.0"].subfolder is None

    out = resave(source, tmp_path / "out", max_shard_size=None)
    files = _files(tmp_path / "out")
    for component in ("unet", "vae", "text_encoder"):
        assert any(f.startswith(component + "/") and f.endswith(".safetensors") for f in files), component
    assert {"sd_xl_base_1.0.safetensors", "model_index.json", "tokenizer/tokenizer.json"} <= files
    for name, part in out.components.items():
        got = {k: v for p in part.weight_files for k, v in load_file(p).items()}
        want = {k: v for p in ckpt.components[name].weight_files for k, v in load_file(p).items()}
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want), name

    # From the Hub the root single file is not downloaded: the components are the pipeline.
    hubbed = resolve_ckpt_dir(SDXL, cache_dir=hub_cache)
    assert list(hubbed.components) == ["text_encoder", "unet", "vae"]
    assert not any(p.endswith("sd_xl_base_1.0.safetensors") for p in hub.downloads())


def test_pipeline_resave_is_atomic_as_a_whole(tmp_path, pipeline_repos):
    source = tmp_path / "src"
    shutil.copytree(pipeline_repos / "acme" / "tiny-sdxl", source)
    dst = tmp_path / "dst"
    resave(source, dst, max_shard_size=None)
    before = {f: (dst / f).read_bytes() for f in _files(dst)}
    # The last component written is damaged: the earlier ones were already rewritten in staging.
    victim = sorted((source / "vae").glob("*.safetensors"))[-1]
    with open(victim, "r+b") as handle:
        handle.truncate(victim.stat().st_size - 8)
    with pytest.raises(CorruptCheckpointError):
        resave(source, dst, max_shard_size="40KB", overwrite=True)
    assert {f: (dst / f).read_bytes() for f in _files(dst)} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dst", "src"]


def test_unreachable_hub_is_a_public_error(hub_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(HubUnreachableError) as info:
        resolve_ckpt_dir(PIXART, cache_dir=hub_cache, endpoint="http://127.0.0.1:9")
    assert type(info.value).__module__ == "ckptkit.errors"
    assert isinstance(info.value, CheckpointNotFoundError)
