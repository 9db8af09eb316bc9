"""Open-Sora 1.2/1.3 model wrappers that load through ckptkit: ``T5Encoder``, ``VideoAutoencoderKL``."""

from __future__ import annotations

import os
from functools import partial
from typing import Any

import torch
from torch import nn

from ckptkit.adapters.t5 import load_t5
from ckptkit.adapters.vae import load_vae
from ckptkit.io.tensors import to_torch_dtype

__all__ = ["T5Embedder", "T5Encoder", "VideoAutoencoderKL"]


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

    @property
    def tokenize_fn(self) -> Any:
        """Open-Sora 1.3: the tokenizer with the caption settings (``tokenize_fn(captions)`` -> ids, mask)."""
        return self.t5.tokenize_fn

    def encode(
        self, input_ids: torch.Tensor | str | list[str], attention_mask: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor | None]:
        """Token ids (1.3) or captions (1.2) -> ``dict(y=embeddings (B, 1, L, D), mask=attention mask)``.

        Open-Sora 1.3's schedulers call ``encode(input_ids, attention_mask)`` with what
        :attr:`tokenize_fn` returned; 1.2 called ``encode(captions)``. Both forms are accepted.

        Raises:
            TypeError: captions given together with an ``attention_mask``.
        """
        if isinstance(input_ids, torch.Tensor):
            ids = input_ids
        else:
            if attention_mask is not None:
                raise TypeError("encode: attention_mask goes with token ids, not with captions")
            tokens = self.tokenize_fn(input_ids)
            ids, attention_mask = tokens["input_ids"], tokens["attention_mask"]
        caption_embs, emb_masks = self.t5.get_text_embeddings(ids, attention_mask)
        return dict(y=caption_embs[:, None], mask=emb_masks)

    def null(self, n: int) -> torch.Tensor:
        """The learnt null caption of the diffusion model's ``y_embedder``, ``n`` times (B, 1, L, D)."""
        if self.y_embedder is None:
            raise ValueError("set T5Encoder.y_embedder to the diffusion model's caption embedder first")
        embedding: Any = self.y_embedder.y_embedding
        return embedding[None].repeat(n, 1, 1)[:, None]


class T5Embedder:
    """Holds Open-Sora's ``model``, ``tokenizer`` and ``tokenize_fn``; token ids -> embeddings."""

    def __init__(
        self, model: nn.Module, tokenizer: Any, *, device: str | torch.device, model_max_length: int
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.model_max_length = model_max_length
        self.tokenize_fn = partial(
            self.tokenizer,
            max_length=self.model_max_length,
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
            add_special_tokens=True,
            return_tensors="pt",
        )

    def get_text_embeddings(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Open-Sora 1.3's ``get_text_embeddings``: ids and mask moved to the device, last hidden state."""
        input_ids = input_ids.to(self.device)
        if attention_mask is not None:
            attention_mask = attention_mask.to(self.device)
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
