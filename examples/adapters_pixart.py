"""Load the parts of a (tiny) PixArt pipeline with ckptkit's adapters.

Builds a tiny pipeline directory with the real libraries' save_pretrained (sharded T5, fp16 VAE
variant, PixArt transformer), then loads each component with load_t5 / load_vae / load_dit and
checks it against the library's own from_pretrained.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, PixArtTransformer2DModel
from transformers import T5Config, T5EncoderModel

from ckptkit.adapters import load_dit, load_t5, load_vae


def build_pipeline(root: Path) -> None:
    torch.manual_seed(0)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0
        )
    )
    t5.save_pretrained(root / "text_encoder", max_shard_size="20KB")
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
    )
    vae.save_pretrained(root / "vae")
    vae.half().save_pretrained(root / "vae", variant="fp16")
    PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=16,
        caption_channels=32,
        sample_size=8,
        norm_num_groups=4,
    ).save_pretrained(root / "transformer")
    index = {
        "_class_name": "PixArtAlphaPipeline",
        "text_encoder": ["transformers", "T5EncoderModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "transformer": ["diffusers", "PixArtTransformer2DModel"],
    }
    (root / "model_index.json").write_text(json.dumps(index))


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "pixart"
        build_pipeline(root)

        # No subfolder: each adapter picks its component from model_index.json.
        text_encoder = load_t5(root, dtype="fp16")
        vae = load_vae(root, variant="fp16", dtype="fp16")
        transformer = load_dit(root)
        for model in (text_encoder, vae, transformer):
            dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
            print(
                f"{type(model).__name__:<26} {sum(p.numel() for p in model.parameters()):>7} params  {dtypes}"
            )

        # torch_dtype= is the name every transformers takes (dtype= from 4.56 on)
        reference = T5EncoderModel.from_pretrained(root, subfolder="text_encoder", torch_dtype=torch.float16)
        for key, tensor in reference.state_dict().items():
            assert torch.equal(text_encoder.state_dict()[key], tensor), key
        print("T5 'wo' kept in", text_encoder.encoder.block[0].layer[1].DenseReluDense.wo.weight.dtype)
        print("same weights as T5EncoderModel.from_pretrained: yes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
