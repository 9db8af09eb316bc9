"""Open-Sora 1.2/1.3 ``opensora.utils.ckpt_utils.load_checkpoint``: upstream's code vs the shim.

Each case builds two identically initialised tiny models, fills one with upstream's function
(copied verbatim into ``_upstream_v12.py``/``_upstream_v13.py``) and one with the shim, from the same
file in an upstream release format, and compares every tensor, dtype, device and a forward pass.
"""

from __future__ import annotations

import pickle

import pytest
import torch
from safetensors.torch import save_file

from ckptkit import CheckpointNotFoundError, UnsafeCheckpointError
from ckptkit.shims.opensora import find_model as shim_find_model
from ckptkit.shims.opensora import load_checkpoint
from tests.conformance.opensora import _upstream_v12, _upstream_v13
from tests.conformance.opensora._tiny import (
    PixArt,
    STDiT3,
    assert_same,
    build,
    dit_release,
    pixart_release,
    save_booster,
    trained,
)

UPSTREAM = {"1.2": _upstream_v12.load_checkpoint, "1.3": _upstream_v13.load_checkpoint}


def both(version, cls, path, seed=0, model_kwargs=None, **kwargs):
    """(upstream-filled model, shim-filled model), both built with the same seed."""
    model_kwargs = model_kwargs or {}
    upstream = build(cls, seed, **model_kwargs)
    shim = build(cls, seed, **model_kwargs)
    UPSTREAM[version](upstream, str(path), **kwargs)
    assert load_checkpoint(shim, str(path), **kwargs) is shim
    return upstream, shim


# --- silent differences: the shim must fill what upstream fills, never leave random weights ---


def test_caption_embedding_padded_with_the_checkpoints_last_row(tmp_path):
    """1.2: a 4-row y_embedding into a 6-row model gets rows 5-6 = the checkpoint's last row."""
    path = tmp_path / "PixArt-XL-2-512x512.pth"
    release = pixart_release(caption_len=4)
    torch.save(release, path)
    upstream, shim = both("1.2", PixArt, path, model_kwargs={"caption_len": 6})
    stored = release["state_dict"]["y_embedder.y_embedding"]
    expected = torch.cat([stored, stored[-1:].expand(2, -1)])
    assert torch.equal(shim.y_embedder.y_embedding, expected)
    assert_same(upstream, shim)


def test_caption_embedding_truncated(tmp_path):
    path = tmp_path / "PixArt-Sigma-XL-2-512-MS.pth"
    release = pixart_release(caption_len=9)
    torch.save(release, path)
    upstream, shim = both("1.2", PixArt, path, model_kwargs={"caption_len": 6})
    assert torch.equal(shim.y_embedder.y_embedding, release["state_dict"]["y_embedder.y_embedding"][:6])
    assert_same(upstream, shim)


def test_stdit3_from_pixart_sigma_gets_spatial_blocks(tmp_path):
    """1.2, STDiT3 from a PixArt-Sigma release: blocks.* become spatial_blocks.*, as upstream renames."""
    path = tmp_path / "PixArt-Sigma-XL-2-2K-MS.pth"
    release = pixart_release(caption_len=6)
    torch.save(release, path)
    upstream, shim = both("1.2", STDiT3, path)
    for i in range(2):
        assert torch.equal(
            shim.spatial_blocks[i].attn.weight, release["state_dict"][f"blocks.{i}.attn.weight"]
        )
    assert_same(upstream, shim)


def test_stdit3_from_pixart_under_1_3_is_not_left_random(tmp_path):
    """1.3 no longer calls reparameter: its spatial_blocks stay random (strict=False). The shim renames."""
    path = tmp_path / "PixArt-Sigma-XL-2-2K-MS.pth"
    release = pixart_release(caption_len=6)["state_dict"]
    release["x_embedder.proj.weight"] = release["x_embedder.proj.weight"].unsqueeze(2)  # a flat, 3D file
    del release["pos_embed"]
    torch.save(release, path)
    upstream, shim = build(STDiT3, 0), build(STDiT3, 0)
    _upstream_v13.load_checkpoint(upstream, str(path))
    load_checkpoint(shim, path)
    assert torch.equal(upstream.spatial_blocks[0].attn.weight, build(STDiT3, 0).spatial_blocks[0].attn.weight)
    for i in range(2):
        assert torch.equal(shim.spatial_blocks[i].attn.weight, release[f"blocks.{i}.attn.weight"])
    assert torch.equal(shim.x_embedder.proj.weight, upstream.x_embedder.proj.weight)  # what both load


def test_stdit3_from_a_renamed_pixart_file_is_not_left_random(tmp_path):
    """Upstream renames only for file names containing "PixArt-Sigma"; the shim goes by the keys."""
    path = tmp_path / "sigma-base.pth"
    release = pixart_release(caption_len=6)
    torch.save(release, path)
    shim = build(STDiT3, 0)
    load_checkpoint(shim, path)
    for i in range(2):
        assert torch.equal(
            shim.spatial_blocks[i].attn.weight, release["state_dict"][f"blocks.{i}.attn.weight"]
        )


def test_pixart_2d_patch_embedding_gets_the_time_axis(tmp_path):
    """PixArt 2D -> 3D: the Conv2d weight (O, I, 2, 2) becomes (O, I, 1, 2, 2), other tensors as stored."""
    path = tmp_path / "PixArt-XL-2-256x256.pth"
    release = pixart_release(caption_len=6)
    torch.save(release, path)
    upstream, shim = both("1.2", PixArt, path)
    stored = release["state_dict"]
    assert torch.equal(shim.x_embedder.proj.weight, stored["x_embedder.proj.weight"].unsqueeze(2))
    assert torch.equal(shim.pos_embed, build(PixArt, 0).pos_embed)  # dropped: the model's own table
    assert_same(upstream, shim)


def test_pixart_release_under_1_3_loads_where_upstream_loads_nothing(tmp_path):
    """1.3 torch.loads a .pth as is: a PixArt release (under "state_dict") fills nothing, silently.

    The shim unwraps and adapts it as 1.2 did; this documents the difference (docs/guides/open-sora.md).
    """
    path = tmp_path / "PixArt-XL-2-512x512.pth"
    release = pixart_release(caption_len=6)
    torch.save(release, path)
    upstream, shim = build(PixArt, 0), build(PixArt, 0)
    _upstream_v13.load_checkpoint(upstream, str(path))
    load_checkpoint(shim, path)
    fresh = build(PixArt, 0)
    assert torch.equal(upstream.blocks[0].attn.weight, fresh.blocks[0].attn.weight)  # random
    assert torch.equal(shim.blocks[0].attn.weight, release["state_dict"]["blocks.0.attn.weight"])


# --- conformance on each release format ---


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_dit_release(tmp_path, version):
    path = tmp_path / "DiT-XL-2-256x256.pt"
    release = dit_release()
    if version == "1.3":  # 1.3 needs the stored patch embedding to fit already
        release["x_embedder.proj.weight"] = release["x_embedder.proj.weight"].unsqueeze(2)
        release["pos_embed"] = build(PixArt, 0).pos_embed
    torch.save(release, path)
    assert_same(*both(version, PixArt, path))


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("cls", [PixArt, STDiT3])
def test_open_sora_ema_pt(tmp_path, version, cls):
    """Open-Sora's own training output: a flat, 3D ema.pt."""
    path = tmp_path / "ema.pt"
    torch.save(trained(cls), path)
    assert_same(*both(version, cls, path))


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_bf16_ema_pt_is_copied_into_the_models_dtype(tmp_path, version):
    path = tmp_path / "ema.pt"
    torch.save({k: v.to(torch.bfloat16) for k, v in trained(STDiT3).items()}, path)
    upstream, shim = both(version, STDiT3, path)
    assert_same(upstream, shim)
    assert shim.spatial_blocks[0].attn.weight.dtype == torch.float32


def test_pos_embed_is_the_models_own_as_in_1_2(tmp_path):
    """A stored pos_embed is dropped for .pt files (1.2's rule): the model keeps its exact table.

    1.3 stopped dropping it and loads what is stored; the two differ only when the stored table
    does (a bf16 file rounds it). The shim keeps 1.2's rule (docs/guides/open-sora.md).
    """
    path = tmp_path / "ema.pt"
    torch.save({k: v.to(torch.bfloat16) for k, v in trained(PixArt).items()}, path)
    v12, v13, shim = build(PixArt, 0), build(PixArt, 0), build(PixArt, 0)
    _upstream_v12.load_checkpoint(v12, str(path))
    _upstream_v13.load_checkpoint(v13, str(path))
    load_checkpoint(shim, path)
    assert_same(v12, shim)
    assert torch.equal(shim.pos_embed, build(PixArt, 0).pos_embed)
    assert torch.equal(v13.pos_embed, build(PixArt, 0).pos_embed.bfloat16().float())


@pytest.mark.parametrize("version", ["1.2", "1.3"])
@pytest.mark.parametrize("strict", [False, True])
def test_colossalai_booster_directory(tmp_path, version, strict):
    directory = save_booster(trained(STDiT3), tmp_path / "epoch1-global_step100")
    assert_same(*both(version, STDiT3, directory, strict=strict))


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_booster_directory_save_as_pt(tmp_path, version):
    up = save_booster(trained(STDiT3), tmp_path / "up" / "epoch1-global_step100")
    ours = save_booster(trained(STDiT3), tmp_path / "ours" / "epoch1-global_step100")
    upstream, shim = build(STDiT3, 0), build(STDiT3, 0)
    UPSTREAM[version](upstream, str(up), save_as_pt=True, model_name="model")
    load_checkpoint(shim, str(ours), save_as_pt=True, model_name="model")
    assert_same(upstream, shim)
    theirs = torch.load(up / "model_ckpt.pt", weights_only=True)
    saved = torch.load(ours / "model_ckpt.pt", weights_only=True)
    assert saved.keys() == theirs.keys() and all(torch.equal(saved[k], theirs[k]) for k in saved)


def test_model_safetensors_1_3(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(trained(STDiT3), path)
    assert_same(*both("1.3", STDiT3, path))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_model_from_the_hub_1_3(hub, hub_cache, suffix, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # "org/..." must not be taken for a local path
    spec = f"org/OpenSora-STDiT-v3/model{suffix}"
    assert_same(*both("1.3", STDiT3, spec, cache_dir=str(hub_cache)))


def test_adapt_16ch(tmp_path):
    """1.3 ``adapt_16ch``: a 4-channel STDiT3 checkpoint into a 16-channel model."""
    path = tmp_path / "ema.pt"
    torch.save(trained(STDiT3, in_channels=4), path)
    upstream, shim = both("1.3", STDiT3, path, model_kwargs={"in_channels": 16}, adapt_16ch=True)
    assert_same(upstream, shim)
    assert shim.x_embedder.proj.weight.shape[1] == 16


def test_adapt_16ch_is_honoured_for_safetensors(tmp_path):
    """Upstream applies adapt_16ch to .pt files only (a 16-channel model then fails on shapes)."""
    save_file(trained(STDiT3, in_channels=4), tmp_path / "model.safetensors")
    torch.save(trained(STDiT3, in_channels=4), tmp_path / "ema.pt")
    from_pt, from_st = build(STDiT3, 0, in_channels=16), build(STDiT3, 0, in_channels=16)
    load_checkpoint(from_pt, tmp_path / "ema.pt", adapt_16ch=True)
    load_checkpoint(from_st, tmp_path / "model.safetensors", adapt_16ch=True)
    assert_same(from_pt, from_st)
    with pytest.raises(RuntimeError, match="size mismatch"):
        _upstream_v13.load_checkpoint(
            build(STDiT3, 0, in_channels=16), str(tmp_path / "model.safetensors"), adapt_16ch=True
        )


@pytest.mark.parametrize("with_model", [True, False])
def test_find_model(tmp_path, with_model):
    """find_model (the VAE discriminators call it): the reparametered state dict of a release."""
    path = tmp_path / "PixArt-XL-2-512x512.pth"
    torch.save(pixart_release(caption_len=4), path)
    model = build(PixArt, 0, caption_len=6) if with_model else None
    if with_model:
        theirs = _upstream_v12.find_model(str(path), model=model)
    else:  # upstream's reparameter needs a model for a file with a caption table: a file without
        release = dit_release()
        del release["y_embedder.y_embedding"]
        torch.save(release, path.with_name("DiT-XL-2-256x256.pt"))
        path = path.with_name("DiT-XL-2-256x256.pt")
        theirs = _upstream_v12.find_model(str(path))
    ours = shim_find_model(path, model=model)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], v) and ours[k].dtype == v.dtype for k, v in theirs.items())


def test_release_name_from_pretrained_models(tmp_path, monkeypatch):
    """1.x configs name releases bare ("PixArt-XL-2-512x512.pth"): upstream keeps them in ./pretrained_models."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pretrained_models").mkdir()
    torch.save(pixart_release(caption_len=4), tmp_path / "pretrained_models" / "PixArt-XL-2-512x512.pth")
    assert_same(*both("1.2", PixArt, "PixArt-XL-2-512x512.pth"))


def test_release_name_from_the_hub(hub, hub_cache, tmp_path, monkeypatch):
    """Not in ./pretrained_models: the release comes from its hub repo (cache first), not a URL download."""
    monkeypatch.chdir(tmp_path)
    shim = build(STDiT3, 0)
    load_checkpoint(shim, "PixArt-Sigma-XL-2-512-MS.pth", cache_dir=hub_cache)
    assert hub.downloads() == {"PixArt-alpha/PixArt-Sigma/PixArt-Sigma-XL-2-512-MS.pth"}
    (tmp_path / "pretrained_models").mkdir()
    torch.save(
        pixart_release(seed=6, caption_len=4), tmp_path / "pretrained_models" / "PixArt-Sigma-XL-2-512-MS.pth"
    )
    upstream = build(STDiT3, 0)
    _upstream_v12.load_checkpoint(upstream, "PixArt-Sigma-XL-2-512-MS.pth")
    assert_same(upstream, shim)


def test_release_only_at_a_url_is_not_downloaded(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match=r"dl\.fbaipublicfiles\.com"):
        load_checkpoint(build(PixArt, 0), "DiT-XL-2-256x256.pt")


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_strict_errors_alike(tmp_path, version):
    state = trained(STDiT3)
    state["extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(RuntimeError, match="extra"):
        UPSTREAM[version](build(STDiT3, 0), str(tmp_path / "extra.pt"), strict=True)
    with pytest.raises(RuntimeError, match="extra"):
        load_checkpoint(build(STDiT3, 0), tmp_path / "extra.pt", strict=True)


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    """Upstream torch.loads Open-Sora checkpoints; a pickle needing more than tensors is refused here."""

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": Payload()}, f, protocol=2)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(build(STDiT3, 0), tmp_path / "evil.pt")


def test_save_as_pt_with_a_file_is_refused(tmp_path):
    torch.save(trained(STDiT3), tmp_path / "ema.pt")
    with pytest.raises(ValueError, match="save_as_pt"):
        load_checkpoint(build(STDiT3, 0), tmp_path / "ema.pt", save_as_pt=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ema.pt"]
