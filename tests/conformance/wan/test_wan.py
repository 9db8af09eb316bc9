"""ckptkit.shims.wan against Wan 2.2's own loaders (the wan22 release), on the same release-layout files."""

from __future__ import annotations

import copy
import importlib
import inspect
import pickle

import pytest
import torch

from ckptkit import ModelMismatchError, UnsafeCheckpointError
from ckptkit.shims import wan as shim
from ckptkit.shims.wan import _install as shim_install
from ckptkit.shims.wan import _t5 as shim_t5
from tests.conformance.wan.conftest import (
    CLIP_CHECKPOINT,
    CLIP_TOKENIZER,
    wan_animate,
    wan_clip,
    wan_model,
    wan_s2v,
    wan_t5,
    wan_vae2_1,
    wan_vae2_2,
)


def assert_same_module(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    """Same class, mode, and every parameter and buffer equal in name, dtype, device and value."""
    assert type(ours) is type(theirs)
    assert ours.training == theirs.training
    for kind in ("named_parameters", "named_buffers"):
        mine, upstream = dict(getattr(ours, kind)()), dict(getattr(theirs, kind)())
        assert mine.keys() == upstream.keys(), kind
        for name, tensor in upstream.items():
            assert mine[name].dtype == tensor.dtype, name
            assert mine[name].device == tensor.device, name
            assert mine[name].requires_grad == tensor.requires_grad, name
            assert torch.equal(mine[name], tensor), name


def run_dit(model: torch.nn.Module) -> torch.Tensor:
    # on a fresh copy: kernels' results depend on the weights' alignment in memory (values compared
    # above); in float32: Wan's DiT leaves its mixed precision to CUDA autocast, which a CPU lacks
    model = copy.deepcopy(model).float()
    torch.manual_seed(0)
    dtype = torch.float32
    with torch.no_grad():
        return model(
            [torch.randn(4, 1, 4, 4, dtype=dtype)],
            torch.tensor([500.0]),
            [torch.randn(3, 4096, dtype=dtype)],
            seq_len=4,
        )[0]


@pytest.mark.parametrize(
    ("release", "subfolder"), [("wan21", None), ("wan22", "low_noise_model"), ("wan22", "high_noise_model")]
)
@pytest.mark.parametrize("torch_dtype", [None, torch.bfloat16])
def test_dit_as_wan_model_from_pretrained(tiny_wan, wan_release, release, subfolder, torch_dtype):
    kwargs = {"subfolder": subfolder} if subfolder else {}
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    theirs = wan_model.WanModel.from_pretrained(wan_release[release], **kwargs)
    ours = shim.load_dit(wan_release[release], **kwargs)  # no model_class: Wan's WanModel, as its call sites
    assert_same_module(ours, theirs)
    assert next(ours.parameters()).dtype == (torch_dtype or torch.float32)  # diffusers' default: float32
    assert torch.equal(ours.freqs, theirs.freqs)
    assert torch.equal(run_dit(ours), run_dit(theirs))


def test_dit_device_map(tiny_wan, wan_release):
    ours = shim.load_dit(wan_release["wan21"], device_map="cpu")
    theirs = wan_model.WanModel.from_pretrained(wan_release["wan21"], device_map="cpu")
    assert_same_module(ours, theirs)
    with pytest.raises(ValueError, match="device_map='nonsense'"):
        shim.load_dit(wan_release["wan21"], device_map="nonsense")
    with pytest.raises(Exception, match="nonsense"):  # Wan (diffusers) refuses it too
        wan_model.WanModel.from_pretrained(wan_release["wan21"], device_map="nonsense")
    with pytest.raises(TypeError, match="device_map"):
        shim.load_dit(wan_release["wan21"], device="cpu", device_map="cpu")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_t5_encoder_model(tiny_wan, wan_release, dtype):
    root = wan_release["wan21"]
    kwargs = {
        "text_len": 8,
        "dtype": dtype,
        "device": "cpu",
        "checkpoint_path": str(root / "models_t5_umt5-xxl-enc-bf16.pth"),
        "tokenizer_path": str(root / "google" / "umt5-xxl"),
    }
    ours, theirs = shim.T5EncoderModel(**kwargs), wan_t5.T5EncoderModel(**kwargs)
    assert type(ours) is type(theirs)
    assert (ours.text_len, ours.dtype, ours.device) == (theirs.text_len, theirs.dtype, theirs.device)
    assert_same_module(ours.model, theirs.model)
    texts = ["a red cat", "dog"]
    outs = [
        copy.deepcopy(encoder.model)(*encoder.tokenizer(texts, return_mask=True, add_special_tokens=True))
        for encoder in (ours, theirs)
    ]
    assert torch.equal(outs[0], outs[1])
    assert [t.shape for t in ours(texts, "cpu")] == [t.shape for t in theirs(texts, "cpu")]


def _inputs(kind: str) -> dict:
    """One denoising step's inputs, as speech2video.py / animate.py pass them (shapes shrunk)."""
    generator = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=generator)

    if kind == "s2v":
        return {
            "x": [r(16, 2, 8, 8)],
            "t": torch.tensor([500.0]),
            "context": [r(3, 4096)],
            "seq_len": 256,
            "cond_states": [r(16, 2, 8, 8)],
            "motion_latents": [r(16, 3, 8, 8)],
            "ref_latents": [r(16, 1, 8, 8)],
            "audio_input": r(1, 25, 8, 5),
            "motion_frames": [5, 2],
            "drop_motion_frames": False,
        }
    return {
        "x": [r(4, 2, 4, 4)],
        "t": torch.tensor([500.0]),
        "clip_fea": r(1, 257, 1280),
        "context": [r(3, 4096)],
        "seq_len": 64,
        "y": [r(4, 2, 4, 4)],
        "pose_latents": [r(16, 1, 4, 4)],
        "face_pixel_values": r(1, 3, 1, 512, 512),
    }


@pytest.fixture
def dit_attention_on_cpu(tiny_wan, monkeypatch):
    monkeypatch.setattr(wan_s2v, "flash_attention", wan_model.flash_attention)
    monkeypatch.setattr(wan_animate, "flash_attention", wan_model.flash_attention)


@pytest.mark.parametrize("kind", ["s2v", "animate"])
def test_s2v_and_animate_dits(dit_attention_on_cpu, wan_release, kind):
    cls = wan_s2v.WanModel_S2V if kind == "s2v" else wan_animate.WanAnimateModel
    # the call speech2video.py / animate.py make (without FSDP)
    kwargs = {"torch_dtype": torch.bfloat16, "device_map": torch.device("cpu")}
    theirs = cls.from_pretrained(wan_release[kind], **kwargs)
    ours = shim.load_dit(wan_release[kind], cls, **kwargs)
    assert_same_module(ours, theirs)
    assert torch.equal(ours.freqs, theirs.freqs)
    with shim.installed():  # Wan's own call, unchanged, on ckptkit
        installed = cls.from_pretrained(wan_release[kind], **kwargs)
    assert_same_module(installed, theirs)
    # the same config (the path as a string; diffusers keeps whatever object it was given)
    assert {**ours.config, "_name_or_path": str(ours.config["_name_or_path"])} == {
        **theirs.config,
        "_name_or_path": str(theirs.config["_name_or_path"]),
    }
    torch.manual_seed(0)
    with torch.no_grad():
        outs = [copy.deepcopy(model).float()(**_inputs(kind)) for model in (ours, theirs)]
    assert all(torch.equal(a, b) for a, b in zip(outs[0], outs[1], strict=True))


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_clip_model(tiny_wan, wan_release, dtype):
    root = wan_release["wan21"]
    kwargs = {
        "dtype": dtype,
        "device": torch.device("cpu"),
        "checkpoint_path": str(root / CLIP_CHECKPOINT),
        "tokenizer_path": str(root / CLIP_TOKENIZER),
    }
    ours, theirs = shim.CLIPModel(**kwargs), wan_clip.CLIPModel(**kwargs)
    assert type(ours) is type(theirs)
    assert (ours.dtype, ours.device, ours.checkpoint_path, ours.tokenizer_path) == (
        theirs.dtype,
        theirs.device,
        theirs.checkpoint_path,
        theirs.tokenizer_path,
    )
    assert_same_module(ours.model, theirs.model)
    assert next(ours.model.parameters()).dtype == dtype
    assert ours.transforms.transforms == theirs.transforms.transforms  # Wan's own, built by its builder
    assert ours.tokenizer.seq_len == theirs.tokenizer.seq_len == ours.model.max_text_len - 2
    assert ours.tokenizer(["a red cat"]).tolist() == theirs.tokenizer(["a red cat"]).tolist()
    # the frames through the vision tower as CLIPModel.visual runs it (31 of 32 blocks), in float32
    frames = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = [
            copy.deepcopy(clip.model).float().visual(frames, use_31_block=True) for clip in (ours, theirs)
        ]
    assert torch.equal(outs[0], outs[1])


def test_clip_model_refuses_a_missing_key(tiny_wan, wan_release, tmp_path):
    state = torch.load(wan_release["wan21"] / CLIP_CHECKPOINT)
    del state["log_scale"]
    torch.save(state, tmp_path / CLIP_CHECKPOINT)
    kwargs = {"dtype": torch.float16, "device": "cpu", "checkpoint_path": str(tmp_path / CLIP_CHECKPOINT)}
    tokenizer = str(wan_release["wan21"] / CLIP_TOKENIZER)
    with pytest.raises(ModelMismatchError, match="log_scale"):
        shim.CLIPModel(tokenizer_path=tokenizer, **kwargs)
    with pytest.raises(RuntimeError, match="log_scale"):  # Wan's strict load_state_dict refuses too
        wan_clip.CLIPModel(tokenizer_path=tokenizer, **kwargs)


@pytest.mark.parametrize("version", ["2.1", "2.2"])
def test_vae(tiny_wan, wan_release, version):
    if version == "2.1":
        path = wan_release["wan21"] / "Wan2.1_VAE.pth"
        ours, theirs = (
            shim.Wan2_1_VAE(vae_pth=str(path), device="cpu"),
            wan_vae2_1.Wan2_1_VAE(vae_pth=str(path), device="cpu"),
        )
        assert shim.WanVAE is shim.Wan2_1_VAE
    else:
        path = wan_release["wan22"] / "Wan2.2_VAE.pth"
        kwargs = {"vae_pth": str(path), "c_dim": 8, "device": "cpu"}
        ours, theirs = shim.Wan2_2_VAE(**kwargs), wan_vae2_2.Wan2_2_VAE(**kwargs)
    assert type(ours) is type(theirs)
    assert_same_module(ours.model, theirs.model)
    assert all(torch.equal(a, b) for a, b in zip(ours.scale, theirs.scale, strict=True))
    video = torch.randn(1, 3, 5, 32, 32)
    with torch.no_grad():
        latents = [vae.model.encode(video, vae.scale) for vae in (ours, theirs)]
    assert torch.equal(latents[0], latents[1])


def test_a_pickle_that_needs_more_than_tensors_is_refused(tiny_wan, wan_release, tmp_path):
    import argparse

    path = tmp_path / "Wan2.1_VAE.pth"
    state = torch.load(wan_release["wan21"] / "Wan2.1_VAE.pth")
    state["args"] = argparse.Namespace(unsafe=True)
    torch.save(state, path)
    with pytest.raises(UnsafeCheckpointError, match="more than plain tensors"):
        shim.Wan2_1_VAE(vae_pth=str(path), device="cpu")
    with pytest.raises(pickle.UnpicklingError):  # Wan's torch.load (weights_only by default) refuses too
        wan_vae2_1.Wan2_1_VAE(vae_pth=str(path), device="cpu")


def test_install_runs_wans_own_code_on_ckptkit(tiny_wan, wan_release):
    root = wan_release["wan22"]
    originals = {
        "dit": vars(wan_model.WanModel).get("from_pretrained", None),
        "t5": vars(wan_t5.T5EncoderModel)["__init__"],
        "vae2_1": wan_vae2_1._video_vae,
        "vae2_2": wan_vae2_2._video_vae,
    }
    t5_kwargs = {
        "text_len": 8,
        "device": "cpu",
        "checkpoint_path": str(root / "models_t5_umt5-xxl-enc-bf16.pth"),
        "tokenizer_path": str(root / "google" / "umt5-xxl"),
    }
    reference = {
        "dit": wan_model.WanModel.from_pretrained(root, subfolder="high_noise_model"),
        "t5": wan_t5.T5EncoderModel(**t5_kwargs).model,
        "vae": wan_vae2_2.Wan2_2_VAE(vae_pth=str(root / "Wan2.2_VAE.pth"), c_dim=8, device="cpu").model,
    }
    s2v = importlib.import_module("wan.modules.s2v.model_s2v").WanModel_S2V
    animate = importlib.import_module("wan.modules.animate.model_animate").WanAnimateModel
    with shim.installed():
        assert wan_model.WanModel.from_pretrained.__func__ is shim_install._dit_from_pretrained
        assert (
            s2v.from_pretrained.__func__
            is animate.from_pretrained.__func__
            is shim_install._dit_from_pretrained
        )
        assert wan_t5.T5EncoderModel.__init__ is shim_t5._t5_init
        for module, original in [(wan_vae2_1, originals["vae2_1"]), (wan_vae2_2, originals["vae2_2"])]:
            assert module._video_vae is not original
            assert inspect.signature(module._video_vae) == inspect.signature(original)  # Wan's own signature
        assert (
            wan_vae2_1._video_vae.__module__ == wan_vae2_2._video_vae.__module__ == "ckptkit.shims.wan._vae"
        )
        # the calls Wan's text2video.py makes, unchanged
        assert_same_module(
            wan_model.WanModel.from_pretrained(root, subfolder="high_noise_model"), reference["dit"]
        )
        assert_same_module(wan_t5.T5EncoderModel(**t5_kwargs).model, reference["t5"])
        vae = wan_vae2_2.Wan2_2_VAE(vae_pth=str(root / "Wan2.2_VAE.pth"), c_dim=8, device="cpu")
        assert_same_module(vae.model, reference["vae"])
        with pytest.raises(TypeError, match="low_cpu_mem_usage"):
            wan_model.WanModel.from_pretrained(root, subfolder="high_noise_model", low_cpu_mem_usage=False)
    assert vars(wan_t5.T5EncoderModel)["__init__"] is originals["t5"]
    assert wan_vae2_1._video_vae is originals["vae2_1"]
    assert wan_vae2_2._video_vae is originals["vae2_2"]
    assert vars(wan_model.WanModel).get("from_pretrained") is originals["dit"]
    assert "from_pretrained" not in vars(s2v) and "from_pretrained" not in vars(animate)
