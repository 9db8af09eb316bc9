"""Rewrite a whole diffusers pipeline in one call: every component, one file each, in fp16.

A tiny real PixArt-alpha pipeline (T5 text encoder, VAE, transformer, tokenizer, scheduler) is
saved by diffusers with sharded weights; ``resave`` rewrites every component as a single fp16
file (what Core ML conversion and small-file uploads want), copies the scheduler, tokenizer and
configs, and puts the new pipeline in place atomically. diffusers loads the result and gives the
same images as the fp16 original.

Run: python examples/resave_pipeline.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ckptkit import resave, resolve_ckpt_dir


def tiny_pixart():
    from diffusers import (
        AutoencoderKL,
        DPMSolverMultistepScheduler,
        PixArtAlphaPipeline,
        PixArtTransformer2DModel,
    )
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    torch.manual_seed(0)
    vocab = ["<pad>", "</s>", "<unk>", "a", "cat"]
    words = Tokenizer(models.Unigram([(t, -1.0) for t in vocab], unk_id=2))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    return PixArtAlphaPipeline(
        tokenizer=T5TokenizerFast(
            tokenizer_object=words, unk_token="<unk>", pad_token="<pad>", eos_token="</s>"
        ),
        text_encoder=T5EncoderModel(
            T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
        ),
        vae=AutoencoderKL(
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            norm_num_groups=4,
        ),
        transformer=PixArtTransformer2DModel(
            num_attention_heads=2,
            attention_head_dim=8,
            in_channels=4,
            out_channels=8,
            num_layers=2,
            cross_attention_dim=16,
            caption_channels=32,
            sample_size=8,
            norm_num_groups=4,
        ),
        scheduler=DPMSolverMultistepScheduler(),
    )


def images(directory: Path, **kwargs) -> torch.Tensor:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(directory, torch_dtype=torch.float32, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator().manual_seed(0)
    return pipe(
        "a cat",
        num_inference_steps=2,
        height=16,
        width=16,
        output_type="pt",
        generator=generator,
        use_resolution_binning=False,
        max_sequence_length=8,
        clean_caption=False,
    ).images


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pipe = tiny_pixart()
        pipe.save_pretrained(root / "pixart", max_shard_size="20KB")
        pipe.save_pretrained(root / "pixart", variant="fp16", max_shard_size="20KB")
        source = resolve_ckpt_dir(root / "pixart", variant="fp16")
        print(
            "components:", {name: len(part.weight_files) for name, part in source.components.items()}, "files"
        )

        out = resave(root / "pixart", root / "pixart-fp16", max_shard_size=None, variant="fp16")
        print(
            "rewritten:", {name: [p.name for p in part.weight_files] for name, part in out.components.items()}
        )
        same = torch.equal(
            images(root / "pixart-fp16", variant="fp16"), images(root / "pixart", variant="fp16")
        )
        print("diffusers loads the rewrite; same images as the original:", same)
        if not same:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
