"""Open-Sora 1.2/1.3 loader entry points, loading through ckptkit.

Swap the import and keep the call::

    # from opensora.models.text_encoder.t5 import T5Encoder
    # from opensora.models.vae.vae import VideoAutoencoderKL
    # from opensora.utils.ckpt_utils import load_checkpoint
    from ckptkit.shims.opensora import T5Encoder, VideoAutoencoderKL, load_checkpoint

Local directories, files and hub caches are honoured everywhere, ``cache_dir`` included (Open-Sora
drops it in nested loads), and ``.safetensors`` checkpoints and directories load as well as ``.pt``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ckptkit.adapters._build import read_weights
from ckptkit.adapters.t5 import load_t5
from ckptkit.adapters.vae import load_vae
from ckptkit.errors import CheckpointNotFoundError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.io.torch_files import load_torch_file, unwrap_state_dict
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = ["T5Encoder", "VideoAutoencoderKL", "load_checkpoint"]

logger = logging.getLogger("ckptkit")

#: Open-Sora drops these from pretrained checkpoints: the model rebuilds them for its input size.
REBUILT_KEYS = ("pos_embed", "pos_embed_temporal")


class T5Encoder:
    """Open-Sora's ``T5Encoder`` (registry type ``"t5"``): a T5 text encoder and its tokenizer.

    Args:
        from_pretrained: a T5 directory, hub repo id (``"DeepFloyd/t5-v1_1-xxl"``) or cache directory.
        model_max_length: tokens per caption (padded and truncated to it).
        device: where the encoder runs.
        dtype: the encoder's dtype (the whole model is cast to it, as Open-Sora does).
        cache_dir: the hub cache to look in.
        shardformer: shard the encoder with ColossalAI's ShardFormer (needs Open-Sora and ColossalAI).
        local_files_only: never download.

    Attributes:
        t5: the object holding ``model`` and ``tokenizer``.
        output_dim: the encoder's hidden size (``d_model``).

    Example:
        >>> encoder = T5Encoder(from_pretrained="DeepFloyd/t5-v1_1-xxl", device="cuda", dtype=torch.bfloat16)  # doctest: +SKIP
        >>> encoder.encode(["a cat"])["y"].shape  # doctest: +SKIP
        torch.Size([1, 1, 120, 4096])
    """

    def __init__(
        self,
        from_pretrained: str | os.PathLike[str] | None = None,
        model_max_length: int = 120,
        device: str | torch.device = "cuda",
        dtype: torch.dtype | str = torch.float,
        cache_dir: str | os.PathLike[str] | None = None,
        shardformer: bool = False,
        local_files_only: bool = False,
    ) -> None:
        if from_pretrained is None:
            raise ValueError("Please specify the path to the T5 model (from_pretrained=)")
        target = to_torch_dtype(dtype)
        model, tokenizer = load_t5(
            from_pretrained,
            dtype=target,
            cache_dir=cache_dir,
            local_files_only=local_files_only or None,
            device_map=str(torch.device(device)),
            with_tokenizer=True,
        )
        self.t5 = T5Embedder(model, tokenizer, device=device, model_max_length=model_max_length)
        self.t5.model.to(dtype=target)  # Open-Sora casts everything, kept-fp32 modules included
        self.y_embedder: nn.Module | None = None
        self.model_max_length = model_max_length
        self.output_dim = model.config.d_model
        self.dtype = target
        if shardformer:
            self.shardformer_t5()

    def shardformer_t5(self) -> None:
        """Shard the encoder with ColossalAI, using Open-Sora's own T5 policy."""
        from colossalai.shardformer import ShardConfig, ShardFormer
        from opensora.acceleration.shardformer.policy.t5_encoder import T5EncoderPolicy

        shard_config = ShardConfig(
            tensor_parallel_process_group=None,
            pipeline_stage_manager=None,
            enable_tensor_parallelism=False,
            enable_fused_normalization=False,
            enable_flash_attention=False,
            enable_jit_fused=True,
            enable_sequence_parallelism=False,
            enable_sequence_overlap=False,
        )
        shard_former = ShardFormer(shard_config=shard_config)
        optim_model, _ = shard_former.optimize(self.t5.model, policy=T5EncoderPolicy())
        self.t5.model = optim_model.to(self.dtype)
        self.t5.model.requires_grad_(False)

    def encode(self, text: str | list[str]) -> dict[str, torch.Tensor]:
        """Captions -> ``dict(y=embeddings (B, 1, L, D), mask=attention mask (B, L))``."""
        caption_embs, emb_masks = self.t5.get_text_embeddings(text)
        return dict(y=caption_embs[:, None], mask=emb_masks)

    def null(self, n: int) -> torch.Tensor:
        """The learnt null caption of the diffusion model's ``y_embedder``, ``n`` times (B, 1, L, D)."""
        if self.y_embedder is None:
            raise ValueError("set T5Encoder.y_embedder to the diffusion model's caption embedder first")
        embedding: Any = self.y_embedder.y_embedding
        return embedding[None].repeat(n, 1, 1)[:, None]


class T5Embedder:
    """Holds Open-Sora's ``model`` and ``tokenizer`` and turns captions into embeddings."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, *, device: str | torch.device, model_max_length: int
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.model_max_length = model_max_length

    def get_text_embeddings(self, texts: str | list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.tokenizer(
            texts,
            max_length=self.model_max_length,
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        input_ids = tokens["input_ids"].to(self.device)
        attention_mask = tokens["attention_mask"].to(self.device)
        with torch.no_grad():
            embeddings = self.model(input_ids=input_ids, attention_mask=attention_mask)[
                "last_hidden_state"
            ].detach()
        return embeddings, attention_mask


class VideoAutoencoderKL(nn.Module):
    """Open-Sora's ``VideoAutoencoderKL``: an image ``AutoencoderKL`` applied frame by frame to video.

    Args:
        from_pretrained: a VAE or pipeline directory, hub repo id or cache directory.
        micro_batch_size: frames per encoder/decoder call (``None``: all at once).
        cache_dir: the hub cache to look in.
        local_files_only: never download.
        subfolder: the VAE's folder in a pipeline repo (``"vae"``).
        scaling_factor: latents are multiplied by it after encoding (Stable Diffusion's 0.18215).

    Example:
        >>> vae = VideoAutoencoderKL(from_pretrained="PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers", subfolder="vae")  # doctest: +SKIP
        >>> vae.encode(video).shape  # (B, 4, T, H/8, W/8)  # doctest: +SKIP
    """

    def __init__(
        self,
        from_pretrained: str | os.PathLike[str] | None = None,
        micro_batch_size: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        subfolder: str | None = None,
        scaling_factor: float = 0.18215,
    ) -> None:
        super().__init__()
        if from_pretrained is None:
            raise ValueError("Please specify the VAE to load (from_pretrained=)")
        module: Any = load_vae(
            from_pretrained,
            subfolder=subfolder,
            cache_dir=cache_dir,
            local_files_only=local_files_only or None,
        )
        self.module = module
        self.out_channels = module.config.latent_channels
        downsample = 2 ** (len(module.config.block_out_channels) - 1)
        self.patch_size = (1, downsample, downsample)
        self.micro_batch_size = micro_batch_size
        self.scaling_factor = scaling_factor

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Video ``(B, C, T, H, W)`` -> scaled latents ``(B, latent C, T, H/f, W/f)`` (sampled)."""
        return self._framewise(
            x, lambda frames: self.module.encode(frames).latent_dist.sample().mul_(self.scaling_factor)
        )

    def decode(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """Scaled latents ``(B, C, T, h, w)`` -> video ``(B, 3, T, H, W)``."""
        return self._framewise(x, lambda latents: self.module.decode(latents / self.scaling_factor).sample)

    def _framewise(self, x: torch.Tensor, step: Any) -> torch.Tensor:
        batch, _, frames = x.shape[:3]
        flat = x.permute(0, 2, 1, 3, 4).reshape(batch * frames, *x.shape[1:2], *x.shape[3:])
        size = self.micro_batch_size or flat.shape[0]
        out = torch.cat([step(flat[i : i + size]) for i in range(0, flat.shape[0], size)], dim=0)
        return out.reshape(batch, frames, *out.shape[1:]).permute(0, 2, 1, 3, 4)

    def get_latent_size(self, input_size: list[int | None]) -> list[int | None]:
        """``[T, H, W]`` -> the latent ``[T, h, w]`` (``None`` stays ``None``)."""
        return [s // p if s is not None else None for s, p in zip(input_size, self.patch_size, strict=True)]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def load_checkpoint(
    model: nn.Module,
    ckpt_path: str | os.PathLike[str],
    save_as_pt: bool = False,
    model_name: str = "model",
    strict: bool = False,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Open-Sora's ``load_checkpoint``: weights from a file, a directory or the hub into ``model``.

    ``ckpt_path`` may be a ``.pt``/``.pth`` file (its ``ema`` or ``state_dict`` entry is unwrapped),
    a ``.safetensors`` file, a ColossalAI/booster directory (weights in ``<dir>/<model_name>``, or
    in the directory itself), or ``"org/repo/file.safetensors"`` on the hub (found in ``cache_dir``
    first). As in Open-Sora, ``pos_embed``/``pos_embed_temporal`` are dropped (the model rebuilds
    them), a 2D patch embedding is given the time axis, and a caption embedding of another length is
    padded with the model's own rows or truncated.

    Args:
        model: the module to fill (in place).
        ckpt_path: where the weights are.
        save_as_pt: for a directory, also write ``<dir>/<model_name>_ckpt.pt``.
        model_name: the subfolder of a booster directory.
        strict: require the keys to match exactly.
        cache_dir: the hub cache for ``org/repo/file`` paths.
        device: where the weights are read to.

    Returns:
        ``model`` (Open-Sora 1.x returns ``None``; 2.0 returns the model).

    Raises:
        CheckpointNotFoundError: nothing at ``ckpt_path``.
        UnsafeCheckpointError: a ``.pt`` file that needs more than plain tensors (``weights_only``).
        RuntimeError: ``strict`` and the keys differ (from ``load_state_dict``).

    Example:
        >>> load_checkpoint(model, "hpcai-tech/OpenSora-STDiT-v3/model.safetensors")  # doctest: +SKIP
    """
    path = Path(os.path.expanduser(os.fspath(ckpt_path)))
    if path.is_dir():
        ckpt = _booster_dir(path, model_name)
        state = read_weights(ckpt)
    elif path.suffix in (".pt", ".pth") and path.is_file():
        state = _unwrap_training_file(load_torch_file(path), path)
    elif path.exists():
        state = read_weights(resolve_ckpt_dir(path))
    else:
        state = read_weights(resolve_ckpt_dir(os.fspath(ckpt_path), cache_dir=cache_dir))
    state = reparameter(state, model)
    state = {k: v.to(device) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=strict)
    logger.info("Missing keys: %s", missing)
    logger.info("Unexpected keys: %s", unexpected)
    if path.is_dir() and save_as_pt:
        target = path / f"{model_name}_ckpt.pt"
        partial = target.with_name(target.name + ".partial")
        torch.save(model.state_dict(), partial)
        os.replace(partial, target)
        logger.info("Model checkpoint saved to %s", target)
    return model


def _booster_dir(path: Path, model_name: str) -> CheckpointDir:
    if (path / model_name).is_dir():
        return resolve_ckpt_dir(path, subfolder=model_name)
    try:
        return resolve_ckpt_dir(path)
    except CheckpointNotFoundError:
        raise CheckpointNotFoundError(
            f"no weights in this directory nor in its {model_name!r} subfolder",
            path=path,
            fix="pass the file, or the directory a ColossalAI booster saved the model in",
        ) from None


def _unwrap_training_file(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    # Open-Sora takes "ema" when present (its own training checkpoints), PixArt files nest under "state_dict".
    for key in ("ema", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    return unwrap_state_dict(obj, None, path)


def reparameter(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Open-Sora's adaptations of pretrained weights to the model being filled.

    Drops ``pos_embed``/``pos_embed_temporal``; gives a 2D ``x_embedder.proj.weight`` the time axis
    when the model's is 3D; pads (with the model's own rows) or truncates ``y_embedder.y_embedding``
    to the model's caption length.
    """
    for key in REBUILT_KEYS:
        state.pop(key, None)
    own = model.state_dict()
    proj = "x_embedder.proj.weight"
    if proj in state and proj in own and state[proj].dim() == 4 and own[proj].dim() == 5:
        state[proj] = state[proj].unsqueeze(2)
    caption = "y_embedder.y_embedding"
    if caption in state and caption in own:
        have, want = state[caption].shape[0], own[caption].shape[0]
        if have < want:
            extra = own[caption][have:].to(state[caption].dtype)
            state[caption] = torch.cat([state[caption], extra], dim=0)
        elif have > want:
            state[caption] = state[caption][:want]
    return state
