"""ckptkit.shims.ltx against LTX-Video 0.1.2 on its other release forms: VAE directories, the
diffusers scheduler folder, the latent upsampler, and the hub downloads of ``inference.infer()``."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import hf_hub_download as real_hf_hub_download
from safetensors.torch import save_file

from ckptkit import CheckpointNotFoundError, CorruptCheckpointError, UnsafeCheckpointError
from ckptkit.shims import ltx as shim
from ckptkit.shims.ltx import _install as shim_install
from tests.conformance.ltx.conftest import VAE_CONFIG, inverse_renames, randomized
from tests.conformance.ltx.test_ltx import assert_same_module

import ltx_video.inference as upstream  # isort: skip
from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder  # isort: skip
from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler  # isort: skip
from ltx_video.models.autoencoders.vae_encode import normalize_latents  # isort: skip
from ltx_video.schedulers.rf import RectifiedFlowScheduler  # isort: skip
from ltx_video.utils import diffusers_config_mapping  # isort: skip


def assert_same_vae(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Every tensor equal, and the same latents and normalized latents from one video."""
    assert_same_module(ours, theirs)
    video = torch.randn(1, 3, 9, 32, 32, generator=torch.Generator().manual_seed(3)).to(
        next(ours.parameters()).dtype
    )
    with torch.no_grad():
        latents = [vae.encode(video).latent_dist.mode() for vae in (ours, theirs)]
    assert torch.equal(latents[0], latents[1])
    if hasattr(theirs, "std_of_means"):
        normalized = [
            normalize_latents(z, vae, vae_per_channel_normalize=True)
            for z, vae in zip(latents, (ours, theirs), strict=True)
        ]
        assert torch.equal(normalized[0], normalized[1])


@pytest.mark.parametrize("torch_dtype", [None, torch.bfloat16])
@pytest.mark.parametrize("layout", ["with-statistics", "without-statistics"])
def test_vae_autoencoder_pth_directory(ltx_vae_release, layout, torch_dtype):
    directory = ltx_vae_release[layout]
    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    theirs = CausalVideoAutoencoder.from_pretrained(directory, **kwargs)
    ours = shim.load_vae(directory, **kwargs)
    assert_same_vae(ours, theirs)
    # the statistics JSON's columns become the buffers normalize_latents reads
    assert ("std_of_means" in dict(ours.named_buffers())) == (layout == "with-statistics")


def test_vae_autoencoder_pth_that_needs_code_is_refused(tmp_path, ltx_vae_release):
    shutil.copy(ltx_vae_release["with-statistics"] / "config.json", tmp_path / "config.json")
    torch.save({"encoder.weight": torch.zeros(1), "extra": _Pickled()}, tmp_path / "autoencoder.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"autoencoder\.pth"):
        shim.load_vae(tmp_path)


class _Pickled:
    """Not a tensor: unpickling it needs this module's code."""


@pytest.fixture
def diffusers_vae_directory(tmp_path, monkeypatch):
    """A diffusers-format LTX-Video folder whose ``vae/`` LTX-Video maps (the tiny config added to its
    table, as only Lightricks' configs are in it), keys under the names its rename table undoes."""
    diffusers_config = {"_class_name": "AutoencoderKLLTXVideo", "latent_channels": 8, "tiny": True}
    monkeypatch.setitem(
        diffusers_config_mapping.diffusers_and_ours_config_mapping,
        diffusers_config_mapping.make_hashable_key(diffusers_config),
        VAE_CONFIG,
    )
    native = randomized(CausalVideoAutoencoder.from_config(dict(VAE_CONFIG)), 31)
    native["per_channel_statistics.mean-of-means"] = torch.randn(8)
    native["per_channel_statistics.std-of-means"] = torch.rand(8) + 0.5
    stored = inverse_renames(sorted(native), diffusers_config_mapping.VAE_KEYS_RENAME_DICT)
    assert stored["per_channel_statistics.std-of-means"] == "latents_std"
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps(diffusers_config))
    save_file(
        {stored[k]: v for k, v in native.items()}, tmp_path / "vae" / "diffusion_pytorch_model.safetensors"
    )
    return tmp_path


@pytest.mark.parametrize("torch_dtype", [None, torch.bfloat16])
def test_vae_diffusers_directory(diffusers_vae_directory, torch_dtype):
    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    theirs = CausalVideoAutoencoder.from_pretrained(diffusers_vae_directory, **kwargs)
    ours = shim.load_vae(diffusers_vae_directory, **kwargs)
    assert_same_vae(ours, theirs)
    assert {"std_of_means", "mean_of_means"} <= dict(ours.named_buffers()).keys()


def test_vae_directory_errors_are_typed(tmp_path, diffusers_vae_directory):
    # a diffusers config LTX-Video does not know: it asserts, ckptkit names the file
    config = diffusers_vae_directory / "vae" / "config.json"
    config.write_text(json.dumps({"_class_name": "AutoencoderKLLTXVideo", "latent_channels": 4}))
    with pytest.raises(AssertionError):
        CausalVideoAutoencoder.from_pretrained(diffusers_vae_directory)
    with pytest.raises(CorruptCheckpointError, match="not one of Lightricks"):
        shim.load_vae(diffusers_vae_directory)
    # neither layout
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        CausalVideoAutoencoder.from_pretrained(tmp_path / "empty")
    with pytest.raises(CheckpointNotFoundError, match="config"):
        shim.load_vae(tmp_path / "empty")
    with pytest.raises(TypeError, match="revision"):
        shim.load_vae(diffusers_vae_directory, revision="main")


def test_scheduler_diffusers_directory(tmp_path):
    # Lightricks' own diffusers scheduler config, which LTX-Video maps to its RectifiedFlowScheduler's
    (tmp_path / "scheduler").mkdir()
    config = dict(diffusers_config_mapping.DIFFUSERS_SCHEDULER_CONFIG)
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(config))
    ours, theirs = shim.load_scheduler(tmp_path), RectifiedFlowScheduler.from_pretrained(tmp_path)
    assert type(ours) is type(theirs)
    assert dict(ours.config) == dict(theirs.config)
    assert ours.config["shifting"] == "SD3"  # LTX-Video's config, not diffusers'
    # an unknown one: LTX-Video fails on an unbound local, ckptkit names the file
    (tmp_path / "scheduler" / "scheduler_config.json").write_text(json.dumps(config | {"shift": 3.0}))
    with pytest.raises(UnboundLocalError):
        RectifiedFlowScheduler.from_pretrained(tmp_path)
    with pytest.raises(CorruptCheckpointError, match=r"scheduler_config\.json"):
        shim.load_scheduler(tmp_path)


def run_upsampler(model: torch.nn.Module) -> torch.Tensor:
    dtype = next(model.parameters()).dtype
    latent = torch.randn(1, 8, 2, 4, 4, generator=torch.Generator().manual_seed(5)).to(dtype)
    with torch.no_grad():
        return model(latent)


@pytest.mark.parametrize("file", ["fp32", "bf16"])
def test_latent_upsampler(ltx_upsampler, file):
    path = ltx_upsampler[file]
    theirs, ours = LatentUpsampler.from_pretrained(path), shim.load_latent_upsampler(path)
    assert_same_module(ours, theirs)
    assert torch.equal(run_upsampler(ours), run_upsampler(theirs))
    theirs = upstream.create_latent_upsampler(str(path), "cpu")
    ours = shim.create_latent_upsampler(str(path), "cpu")
    assert_same_module(ours, theirs)
    assert not ours.training
    assert run_upsampler(ours).shape == (1, 8, 2, 8, 8)
    assert torch.equal(run_upsampler(ours), run_upsampler(theirs))


def test_latent_upsampler_errors_are_typed(ltx_upsampler, tmp_path):
    with pytest.raises(UnboundLocalError):  # LTX-Video, on a path that is not a .safetensors file
        LatentUpsampler.from_pretrained(tmp_path / "missing.safetensors")
    with pytest.raises(CheckpointNotFoundError):
        shim.load_latent_upsampler(tmp_path / "missing.safetensors")
    save_file({"x": torch.zeros(1)}, tmp_path / "no-config.safetensors")
    with pytest.raises(CorruptCheckpointError, match="'config'"):
        shim.load_latent_upsampler(tmp_path / "no-config.safetensors")


@pytest.fixture
def hub_repos(tmp_path_factory, ltx_release, ltx_upsampler):
    """The hub the ``hub`` fixture serves: ``Lightricks/LTX-Video`` with a release and the upscaler."""
    root = tmp_path_factory.mktemp("ltx-hub")
    repo = root / "Lightricks" / "LTX-Video"
    repo.mkdir(parents=True)
    shutil.copy(ltx_release["bf16"], repo / "ltxv-tiny.safetensors")
    shutil.copy(ltx_upsampler["fp32"], repo / "ltxv-spatial-upscaler-tiny.safetensors")
    (repo / "unrelated.safetensors").write_bytes(b"never fetched")
    return root


def test_install_fetches_what_infer_fetches_through_ckptkit(hub, tmp_path):
    # inference.infer() downloads the checkpoint and the upscaler by file name from Lightricks/LTX-Video
    calls = [
        {"repo_id": "Lightricks/LTX-Video", "filename": name, "repo_type": "model"}
        for name in ("ltxv-tiny.safetensors", "ltxv-spatial-upscaler-tiny.safetensors")
    ]
    theirs = [real_hf_hub_download(**call, cache_dir=tmp_path / "real") for call in calls]
    reference = upstream.create_latent_upsampler(theirs[1], "cpu")  # what infer() does next with it
    with shim.installed():
        assert upstream.hf_hub_download is shim.hf_hub_download
        assert upstream.create_latent_upsampler is shim.create_latent_upsampler
        assert LatentUpsampler.from_pretrained.__func__ is shim_install._upsampler_from_pretrained
        hub.reset()
        ours = [upstream.hf_hub_download(**call) for call in calls]
        # only the two files named, nothing else of the repo
        assert hub.downloads() == {f"Lightricks/LTX-Video/{call['filename']}" for call in calls}
        for mine, real in zip(ours, theirs, strict=True):
            assert Path(mine).read_bytes() == Path(real).read_bytes()
        upsampler = upstream.create_latent_upsampler(ours[1], "cpu")
        assert_same_module(upsampler, reference)
        assert torch.equal(run_upsampler(upsampler), run_upsampler(reference))
        with pytest.raises(TypeError, match="low_cpu_mem_usage"):
            LatentUpsampler.from_pretrained(ours[1], low_cpu_mem_usage=True)
        with pytest.raises(TypeError, match="force_download"):
            upstream.hf_hub_download(**calls[0], force_download=True)
    assert upstream.hf_hub_download is real_hf_hub_download
    assert LatentUpsampler.from_pretrained.__func__ is not shim_install._upsampler_from_pretrained
