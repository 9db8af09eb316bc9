"""Wan2.1 / Wan2.2 native ``ckpt_dir`` layouts, loaded through ckptkit (see :mod:`ckptkit.shims.wan._checkpoint`)."""

from ckptkit.shims.wan._checkpoint import (
    DIT_SUBFOLDERS,
    T5_CHECKPOINT,
    T5_TOKENIZER,
    VAE_CHECKPOINTS,
    T5EncoderModel,
    Wan2_1_VAE,
    Wan2_2_VAE,
    WanCheckpoint,
    WanVAE,
    install,
    installed,
    load_dit,
    uninstall,
    video_vae_2_1,
    video_vae_2_2,
    wan_checkpoint,
)

__all__ = [
    "DIT_SUBFOLDERS",
    "T5_CHECKPOINT",
    "T5_TOKENIZER",
    "VAE_CHECKPOINTS",
    "T5EncoderModel",
    "Wan2_1_VAE",
    "Wan2_2_VAE",
    "WanCheckpoint",
    "WanVAE",
    "install",
    "installed",
    "load_dit",
    "uninstall",
    "video_vae_2_1",
    "video_vae_2_2",
    "wan_checkpoint",
]
