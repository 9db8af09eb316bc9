"""Migrate Open-Sora's loaders to ckptkit: same calls, one import changed.

Builds a tiny T5 encoder (with its tokenizer) and a tiny AutoencoderKL with the real
transformers/diffusers ``save_pretrained``, then loads them as Open-Sora 1.2/1.3 code does, through
``ckptkit.shims.opensora``: ``T5Encoder`` encodes captions, ``VideoAutoencoderKL`` encodes and
decodes a video frame by frame, and ``load_checkpoint`` fills a model from a ``.safetensors`` file
(which Open-Sora 1.2's own loader cannot read). See docs/guides/open-sora.md.

Run: python examples/migrate_opensora.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch import nn
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

# before: from opensora.models.text_encoder.t5 import T5Encoder  (and vae.vae, utils.ckpt_utils)
from ckptkit.shims.opensora import T5Encoder, VideoAutoencoderKL, load_checkpoint


def save_t5(directory: Path) -> None:
    """A tiny T5 encoder and word-level tokenizer, laid out as DeepFloyd/t5-v1_1-xxl is."""
    words = ["a", "cat", "dog", "on", "the", "mat", "sits", "runs", "red", "video", "of"]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    config = T5Config(
        vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, decoder_start_token_id=0,
    )  # fmt: skip
    T5EncoderModel(config).save_pretrained(directory, max_shard_size="20KB")
    tokenizer.save_pretrained(directory)


def save_vae(directory: Path) -> None:
    AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16), layers_per_block=1, latent_channels=4, norm_num_groups=4,
    ).save_pretrained(directory)  # fmt: skip


class TinyDiT(nn.Module):
    """Stands in for an STDiT: a caption embedding and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.y_embedder = nn.Module()
        self.y_embedder.y_embedding = nn.Parameter(torch.zeros(10, 32))
        self.head = nn.Linear(32, 8)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        save_t5(root / "t5-v1_1-xxl")
        save_vae(root / "sd-vae")

        text_encoder = T5Encoder(
            from_pretrained=root / "t5-v1_1-xxl", model_max_length=10, device="cpu", dtype=torch.bfloat16
        )
        out = text_encoder.encode(["a red cat sits on the mat", "a dog"])
        print("T5Encoder.encode: y", tuple(out["y"].shape), out["y"].dtype, "mask", tuple(out["mask"].shape))

        vae = VideoAutoencoderKL(from_pretrained=root / "sd-vae", micro_batch_size=2)
        video = torch.randn(1, 3, 3, 16, 16)  # (B, C, T, H, W)
        with torch.no_grad():
            latents = vae.encode(video)
            decoded = vae.decode(latents)
        print(
            "VideoAutoencoderKL:", tuple(video.shape), "->", tuple(latents.shape), "->", tuple(decoded.shape)
        )
        assert latents.shape == (1, 4, 3, 8, 8) and decoded.shape == video.shape

        trained = TinyDiT()
        nn.init.normal_(trained.y_embedder.y_embedding)
        save_file(trained.state_dict(), root / "model.safetensors")
        model = load_checkpoint(TinyDiT(), root / "model.safetensors")
        assert torch.equal(model.y_embedder.y_embedding, trained.y_embedder.y_embedding)
        print("load_checkpoint: model.safetensors ->", type(model).__name__, "filled")

        text_encoder.y_embedder = model.y_embedder
        print("T5Encoder.null(2):", tuple(text_encoder.null(2).shape))


if __name__ == "__main__":
    main()
