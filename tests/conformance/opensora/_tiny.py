"""Tiny models with Open-Sora's parameter names, and checkpoints in its release formats.

The names are those of Open-Sora's PixArt (``opensora/models/pixart/pixart.py``: a persistent
``pos_embed`` buffer, ``x_embedder.proj`` a Conv3d, ``y_embedder.y_embedding``, ``blocks.N``,
``final_layer.linear``) and STDiT3 (``spatial_blocks.N``/``temporal_blocks.N``, no ``pos_embed``);
the class names are upstream's, which ``reparameter`` tests (``type(model).__name__ == "STDiT3"``).
Releases: PixArt ``.pth`` files nest the state dict under ``"state_dict"`` with a 2D (Conv2d) patch
embedding and 120-token captions; DiT ``.pt`` files are flat and 2D; Open-Sora's own ``ema.pt`` is
flat and 3D; ColossalAI boosters save ``<dir>/model/pytorch_model.bin.index.json`` with
``pytorch_model-0000N.bin`` shards; hub releases are one ``model.safetensors``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

HIDDEN = 8
PATCH = (1, 2, 2)


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(HIDDEN)
        self.attn = nn.Linear(HIDDEN, HIDDEN)


class _Embed(nn.Module):
    def __init__(self, in_channels: int, caption_len: int) -> None:
        super().__init__()
        self.proj = nn.Conv3d(in_channels, HIDDEN, kernel_size=PATCH, stride=PATCH)
        self.caption_len = caption_len


class _Captions(nn.Module):
    def __init__(self, caption_len: int) -> None:
        super().__init__()
        self.y_embedding = nn.Parameter(torch.randn(caption_len, HIDDEN) / HIDDEN**0.5)
        self.y_proj = nn.Linear(HIDDEN, HIDDEN)


class _Final(nn.Module):
    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Linear(HIDDEN, PATCH[0] * PATCH[1] * PATCH[2] * out_channels)


class _Base(nn.Module):
    block_names: tuple[str, ...] = ()

    def __init__(self, caption_len: int = 6, in_channels: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.x_embedder = _Embed(in_channels, caption_len)
        self.y_embedder = _Captions(caption_len)
        for name in self.block_names:
            setattr(self, name, nn.ModuleList(_Block() for _ in range(depth)))
        self.final_layer = _Final(in_channels * 2)  # pred_sigma: mean and variance per channel

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        tokens = self.x_embedder.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)
        tokens = tokens + self._position(tokens)
        caption = self.y_embedder.y_proj(y + self.y_embedder.y_embedding).mean(1, keepdim=True)
        for name in self.block_names:
            for block in getattr(self, name):
                tokens = tokens + block.attn(block.norm(tokens)) + caption
        return self.final_layer.linear(tokens)

    def _position(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(())


class PixArt(_Base):
    block_names = ("blocks",)

    def __init__(self, caption_len: int = 6, in_channels: int = 4, depth: int = 2, tokens: int = 4) -> None:
        super().__init__(caption_len, in_channels, depth)
        position = torch.arange(tokens, dtype=torch.float64)[:, None] / 10 ** torch.arange(HIDDEN)[None]
        self.register_buffer("pos_embed", position.sin().float()[None])  # persistent, as Open-Sora's

    def _position(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.pos_embed


class STDiT3(_Base):
    block_names = ("spatial_blocks", "temporal_blocks")


def build(cls: type[_Base], seed: int, **kwargs: int) -> _Base:
    torch.manual_seed(seed)
    return cls(**kwargs)


def pixart_release(seed: int = 1, caption_len: int = 4, tokens: int = 4) -> dict[str, object]:
    """A PixArt-alpha/Sigma ``.pth`` release: ``{"state_dict": ...}``, Conv2d patch embedding."""
    state = {
        k: v.clone()
        for k, v in build(PixArt, seed, caption_len=caption_len, tokens=tokens).state_dict().items()
    }
    state["x_embedder.proj.weight"] = state["x_embedder.proj.weight"].squeeze(2)
    state["pos_embed"] = state["pos_embed"] * 2  # another resolution's table: dropped, never loaded
    return {"state_dict": state}


def dit_release(seed: int = 2, caption_len: int = 6) -> dict[str, torch.Tensor]:
    """A DiT ``.pt`` release: flat, Conv2d patch embedding, with ``pos_embed``."""
    state = pixart_release(seed, caption_len)["state_dict"]
    assert isinstance(state, dict)
    return state


def trained(cls: type[_Base], seed: int = 3, **kwargs: int) -> dict[str, torch.Tensor]:
    """An Open-Sora training checkpoint (``ema.pt``, or the tensors of ``model.safetensors``)."""
    return {k: v.clone() for k, v in build(cls, seed, **kwargs).state_dict().items()}


def save_booster(state: dict[str, torch.Tensor], directory: Path, per_shard: int = 4) -> Path:
    """``booster.save_model(model, directory / "model", shard=True)`` as ColossalAI lays it out."""
    model_dir = directory / "model"
    model_dir.mkdir(parents=True)
    keys = list(state)
    weight_map = {}
    for index in range(0, len(keys), per_shard):
        name = f"pytorch_model-{index // per_shard + 1:05d}.bin"
        torch.save({k: state[k] for k in keys[index : index + per_shard]}, model_dir / name)
        weight_map |= {k: name for k in keys[index : index + per_shard]}
    total = sum(v.numel() * v.element_size() for v in state.values())
    index_file = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (model_dir / "pytorch_model.bin.index.json").write_text(json.dumps(index_file, indent=2))
    return directory


def inputs(model: _Base, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(2, model.in_channels, 1, 4, 4, generator=generator)
    y = torch.randn(2, model.y_embedder.y_embedding.shape[0], HIDDEN, generator=generator)
    return x, y


def assert_same(upstream: nn.Module, shim: nn.Module) -> None:
    """Every parameter and buffer equal (values, dtype, device), and the same forward output."""
    ours = dict([*shim.named_parameters(), *shim.named_buffers()])
    theirs = dict([*upstream.named_parameters(), *upstream.named_buffers()])
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        assert ours[key].dtype == value.dtype, key
        assert ours[key].device == value.device, key
        assert torch.equal(ours[key], value), key
    assert isinstance(upstream, _Base) and isinstance(shim, _Base)
    with torch.no_grad():
        assert torch.equal(shim(*inputs(shim)), upstream(*inputs(upstream)))
