"""Migrate LTX-Video's loading to ckptkit: one import line, or ``install()`` and no line at all.

Needs LTX-Video itself (``pip install ltx-video``): the model classes are its own. This writes a tiny
release-format file with LTX-Video's classes — one ``.safetensors`` holding ``model.diffusion_model.*``
(transformer), ``vae.*`` (VAE, with ``vae.per_channel_statistics.*``) and a ``config`` JSON in its
metadata — plus a PixArt-like text-encoder repo (``text_encoder/``, ``tokenizer/``), then builds
LTX-Video's pipeline both ways. See docs/guides/ltx-video.md.

Run: python examples/migrate_ltx.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import T5Config, T5EncoderModel, T5Tokenizer

import ckptkit.shims.ltx

# before: from ltx_video.inference import create_latent_upsampler, create_ltx_video_pipeline
from ckptkit.shims.ltx import create_latent_upsampler, create_ltx_video_pipeline

TRANSFORMER = {
    "_class_name": "Transformer3DModel", "num_attention_heads": 2, "attention_head_dim": 8,
    "in_channels": 8, "out_channels": 8, "num_layers": 1, "cross_attention_dim": 16,
    "caption_channels": 16, "activation_fn": "gelu-approximate", "attention_bias": True,
    "adaptive_norm": "single_scale_shift", "norm_elementwise_affine": False, "norm_eps": 1e-6,
    "qk_norm": "rms_norm", "standardization_norm": "rms_norm", "positional_embedding_type": "rope",
    "positional_embedding_theta": 10000.0, "positional_embedding_max_pos": [20, 2048, 2048],
    "timestep_scale_multiplier": 1000, "attention_type": "default", "use_tpu_flash_attention": False,
}  # fmt: skip
VAE = {
    "_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
    "latent_channels": 8, "encoder_blocks": [["res_x", {"num_layers": 1}], ["compress_all", {}]],
    "decoder_blocks": [["res_x", {"num_layers": 1}], ["compress_all", {}]], "patch_size": 4,
    "norm_layer": "pixel_norm", "latent_log_var": "uniform", "use_quant_conv": False,
    "encoder_base_channels": 8, "decoder_base_channels": 8, "spatial_padding_mode": "replicate",
}  # fmt: skip
SCHEDULER = {"_class_name": "RectifiedFlowScheduler", "shifting": "SD3", "sampler": "LinearQuadratic"}
UPSCALER = {
    "in_channels": 8,
    "mid_channels": 32,
    "num_blocks_per_stage": 1,
    "dims": 3,
    "spatial_upsample": True,
}


def write_release(root: Path) -> tuple[Path, Path]:
    """A tiny LTX-Video release file and text-encoder repo, in the formats LTX-Video ships."""
    from ltx_video.models.autoencoders.causal_video_autoencoder import CausalVideoAutoencoder
    from ltx_video.models.transformers.transformer3d import Transformer3DModel

    torch.manual_seed(0)
    state = {
        f"model.diffusion_model.{k}": v
        for k, v in Transformer3DModel.from_config(TRANSFORMER).state_dict().items()
    }
    state |= {f"vae.{k}": v for k, v in CausalVideoAutoencoder.from_config(dict(VAE)).state_dict().items()}
    state["vae.per_channel_statistics.std-of-means"] = torch.rand(8) + 0.5
    state["vae.per_channel_statistics.mean-of-means"] = torch.randn(8)
    config = {"transformer": TRANSFORMER, "vae": VAE, "scheduler": SCHEDULER, "allowed_inference_steps": None}
    ckpt = root / "ltxv-tiny.safetensors"
    save_file(
        {k: v.to(torch.bfloat16) for k, v in state.items()}, ckpt, metadata={"config": json.dumps(config)}
    )

    repo = root / "PixArt-tiny"
    t5 = T5Config(
        vocab_size=32,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        relative_attention_num_buckets=8,
    )
    T5EncoderModel(t5).save_pretrained(repo / "text_encoder")
    vocab = [
        ("<pad>", 0.0),
        ("</s>", 0.0),
        ("<unk>", 0.0),
        ("\u2581", -2.0),
        ("\u2581a", -1.0),
        ("\u2581cat", -1.0),
    ]
    T5Tokenizer(vocab=vocab, extra_ids=0).save_pretrained(repo / "tokenizer")
    return ckpt, repo


def write_upscaler(root: Path) -> Path:
    """The multi-scale pipeline's spatial upscaler: one .safetensors, its config in the metadata."""
    from ltx_video.models.autoencoders.latent_upsampler import LatentUpsampler

    path = root / "ltxv-spatial-upscaler-tiny.safetensors"
    save_file(
        LatentUpsampler.from_config(UPSCALER).state_dict(), path, metadata={"config": json.dumps(UPSCALER)}
    )
    return path


def describe(pipeline) -> str:
    return (
        f"transformer {pipeline.transformer.dtype}, vae {pipeline.vae.dtype} "
        f"(latent statistics: {tuple(pipeline.vae.std_of_means.shape)}), text encoder {pipeline.text_encoder.dtype}"
    )


def main() -> None:
    import ltx_video.inference

    with tempfile.TemporaryDirectory() as tmp:
        ckpt, text_encoder_repo = write_release(Path(tmp))

        # 1. the one-line migration: the same call, ckptkit's import
        pipeline = create_ltx_video_pipeline(str(ckpt), "bfloat16", str(text_encoder_repo), device="cpu")
        print("create_ltx_video_pipeline ->", type(pipeline).__name__, describe(pipeline))

        # 2. no line changed: LTX-Video's own inference.py code path, loading through ckptkit
        with ckptkit.shims.ltx.installed():
            assert ltx_video.inference.create_ltx_video_pipeline is create_ltx_video_pipeline
            same = ltx_video.inference.create_ltx_video_pipeline(
                str(ckpt), "bfloat16", str(text_encoder_repo), device="cpu"
            )
            # the multi-scale pipeline's upscaler, as infer() loads it
            upscaler = ltx_video.inference.create_latent_upsampler(str(write_upscaler(Path(tmp))), "cpu")
        print("installed(): ltx_video.inference.create_ltx_video_pipeline ->", describe(same))
        ours = create_latent_upsampler(str(Path(tmp) / "ltxv-spatial-upscaler-tiny.safetensors"), "cpu")
        print(
            "create_latent_upsampler ->",
            type(ours).__name__,
            "same both ways:",
            all(torch.equal(ours.state_dict()[k], v) for k, v in upscaler.state_dict().items()),
        )
        equal = all(
            torch.equal(a, b)
            for a, b in zip(
                pipeline.transformer.state_dict().values(),
                same.transformer.state_dict().values(),
                strict=True,
            )
        )
        print("same transformer weights both ways:", equal)
        print(
            "after installed(): LTX-Video's own loader is back:",
            ltx_video.inference.create_ltx_video_pipeline is not create_ltx_video_pipeline,
        )


if __name__ == "__main__":
    main()
