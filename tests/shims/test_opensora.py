from __future__ import annotations

import pickle

import pytest
import torch
from diffusers import AutoencoderKL
from huggingface_hub import save_torch_state_dict
from safetensors.torch import save_file
from torch import nn
from transformers import AutoTokenizer, T5EncoderModel

from ckptkit import CheckpointNotFoundError, UnsafeCheckpointError
from ckptkit.shims.opensora import T5Encoder, VideoAutoencoderKL, load_checkpoint
from tests._versions import dtype_kwarg

CAPTIONS = ["a red cat sits on the mat", "a dog"]


def reference_encode(directory, dtype, max_length):
    """What Open-Sora's T5Encoder computes: T5Embedder tokenization, the model cast with .to(dtype)."""
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = T5EncoderModel.from_pretrained(directory, **dtype_kwarg(dtype)).eval().to(dtype)
    for tensor in model.parameters():
        tensor.data = tensor.data.clone()  # aligned memory, as ckptkit reads (see tests/adapters)
    tokens = tokenizer(
        CAPTIONS,
        max_length=max_length,
        padding="max_length",
        truncation=True,
        return_attention_mask=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        y = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])["last_hidden_state"]
    return dict(y=y[:, None], mask=tokens["attention_mask"])


@pytest.mark.parametrize("dtype", [torch.float, torch.bfloat16])
def test_t5_encoder_matches_open_sora(shim_layouts, dtype):
    directory = shim_layouts["t5_with_tokenizer"]
    encoder = T5Encoder(from_pretrained=directory, model_max_length=10, device="cpu", dtype=dtype)
    out = encoder.encode(CAPTIONS)
    expected = reference_encode(directory, dtype, 10)
    assert out["y"].shape == (2, 1, 10, 32)
    assert torch.equal(out["mask"], expected["mask"])
    assert torch.equal(out["y"], expected["y"])
    assert encoder.output_dim == 32
    assert {p.dtype for p in encoder.t5.model.parameters()} == {dtype}  # wo included, as Open-Sora casts


def test_t5_encoder_null_and_missing_path(shim_layouts):
    encoder = T5Encoder(from_pretrained=shim_layouts["t5_with_tokenizer"], device="cpu")
    embedder = nn.Module()
    embedder.y_embedding = nn.Parameter(torch.randn(10, 32))
    encoder.y_embedder = embedder
    assert encoder.null(3).shape == (3, 1, 10, 32)
    with pytest.raises(ValueError, match="T5 model"):
        T5Encoder(device="cpu")


def frames_of(video):
    batch, channels, frames, height, width = video.shape
    return video.permute(0, 2, 1, 3, 4).reshape(batch * frames, channels, height, width)


def video_of(frames, batch):
    return frames.reshape(batch, -1, *frames.shape[1:]).permute(0, 2, 1, 3, 4)


@pytest.mark.parametrize("micro_batch_size", [None, 2, 4])
def test_video_vae_matches_open_sora(layouts, micro_batch_size):
    vae = VideoAutoencoderKL(from_pretrained=layouts["vae_variants"], micro_batch_size=micro_batch_size)
    reference = AutoencoderKL.from_pretrained(layouts["vae_variants"])
    for tensor in reference.parameters():
        tensor.data = tensor.data.clone()
    video = torch.randn(2, 3, 3, 16, 16)
    frames = frames_of(video)
    size = micro_batch_size or frames.shape[0]
    with torch.no_grad():
        torch.manual_seed(0)
        expected = torch.cat(
            [reference.encode(frames[i : i + size]).latent_dist.sample() * 0.18215 for i in range(0, 6, size)]
        )
        torch.manual_seed(0)
        latents = vae.encode(video)
        assert latents.shape == (2, 4, 3, 8, 8)
        assert torch.equal(latents, video_of(expected, 2))
        decoded = vae.decode(latents)
        expected_video = torch.cat(
            [reference.decode(frames_of(latents)[i : i + size] / 0.18215).sample for i in range(0, 6, size)]
        )
    assert decoded.shape == video.shape
    assert torch.equal(decoded, video_of(expected_video, 2))
    assert vae.get_latent_size([3, 16, None]) == [3, 8, None]
    assert vae.out_channels == 4 and vae.dtype == torch.float32


def test_video_vae_from_pipeline_subfolder(layouts):
    vae = VideoAutoencoderKL(from_pretrained=layouts["pipeline"], subfolder="vae")
    assert isinstance(vae.module, AutoencoderKL)


class TinySTDiT(nn.Module):
    """The parts of an STDiT that Open-Sora's load_checkpoint treats specially."""

    def __init__(self, caption_len: int = 6) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, 4, 8))
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv3d(4, 8, kernel_size=(1, 2, 2))
        self.y_embedder = nn.Module()
        self.y_embedder.y_embedding = nn.Parameter(torch.randn(caption_len, 8))
        self.head = nn.Linear(8, 8)


def trained_state(seed: int = 1, caption_len: int = 6) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in TinySTDiT(caption_len).state_dict().items()}


def assert_loaded(model, state):
    own = model.state_dict()
    for key, value in state.items():
        if key != "pos_embed":
            assert torch.equal(own[key], value), key
    assert torch.equal(own["pos_embed"], torch.zeros(1, 4, 8))  # dropped, as Open-Sora does


@pytest.mark.parametrize("wrapper", [None, "ema", "state_dict"])
@pytest.mark.parametrize("suffix", [".pt", ".pth"])
def test_load_checkpoint_torch_files(tmp_path, wrapper, suffix):
    state = trained_state()
    path = tmp_path / f"model{suffix}"
    torch.save({wrapper: state, "step": 7} if wrapper else state, path)
    model = TinySTDiT()
    assert load_checkpoint(model, str(path)) is model
    assert_loaded(model, state)


def test_load_checkpoint_safetensors_and_directories(tmp_path):
    state = trained_state()
    save_file(state, tmp_path / "model.safetensors")
    model = TinySTDiT()
    load_checkpoint(model, tmp_path / "model.safetensors")
    assert_loaded(model, state)

    booster = tmp_path / "epoch1-global_step100"
    (booster / "model").mkdir(parents=True)
    save_torch_state_dict(state, booster / "model", max_shard_size=300)
    assert len(list((booster / "model").glob("*.safetensors"))) > 1
    model = TinySTDiT()
    load_checkpoint(model, str(booster), save_as_pt=True)
    assert_loaded(model, state)
    saved = torch.load(booster / "model_ckpt.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_load_checkpoint_adapts_2d_weights_and_caption_length(tmp_path):
    state = trained_state(caption_len=4)
    state["x_embedder.proj.weight"] = state["x_embedder.proj.weight"].squeeze(2)  # a 2D (PixArt) file
    torch.save({"state_dict": state}, tmp_path / "PixArt-tiny.pth")
    model = TinySTDiT(caption_len=6)
    load_checkpoint(model, tmp_path / "PixArt-tiny.pth")
    assert torch.equal(model.x_embedder.proj.weight, state["x_embedder.proj.weight"].unsqueeze(2))
    stored = state["y_embedder.y_embedding"]
    expected = torch.cat([stored, stored[-1:].expand(2, -1)])  # padded with the stored last row
    assert torch.equal(model.y_embedder.y_embedding, expected)

    long = trained_state(caption_len=9)
    torch.save(long, tmp_path / "long.pt")
    load_checkpoint(model, tmp_path / "long.pt")
    assert torch.equal(model.y_embedder.y_embedding, long["y_embedder.y_embedding"][:6])


def test_load_checkpoint_strict_and_errors(tmp_path):
    state = trained_state()
    state["extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(RuntimeError, match="extra"):
        load_checkpoint(TinySTDiT(), tmp_path / "extra.pt", strict=True)
    load_checkpoint(TinySTDiT(), tmp_path / "extra.pt")  # strict=False by default, as Open-Sora

    with pytest.raises(CheckpointNotFoundError):
        load_checkpoint(TinySTDiT(), tmp_path / "absent.pt")

    class Payload:
        def __reduce__(self):
            return (print, ("code ran",))

    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump({"x": Payload()}, f, protocol=2)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(TinySTDiT(), tmp_path / "evil.pt")
