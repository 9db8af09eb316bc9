"""resolve_ckpt_dir offline: a local pipeline component, and a hub repo that is not cached.

Builds a tiny pipeline folder with the real ``save_pretrained`` (a T5 text encoder and a VAE
with an fp16 variant), resolves components of it, then asks for a hub repo with downloads off:
the error lists every place looked and the command that would fetch exactly that component.

Run: python examples/resolve_offline.py
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

work = Path(tempfile.mkdtemp(prefix="ckptkit-resolve-"))
# Set before huggingface_hub is imported: it reads these once, at import.
os.environ["HF_HUB_CACHE"] = str(work / "hub-cache")
os.environ["HF_HUB_OFFLINE"] = "1"

import torch  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402
from transformers import T5Config, T5EncoderModel  # noqa: E402

from ckptkit import CheckpointNotFoundError, resolve_ckpt_dir  # noqa: E402


def build_pipeline(root: Path) -> Path:
    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4))
    t5.save_pretrained(root / "text_encoder", max_shard_size="20KB")
    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4)
    vae.save_pretrained(root / "vae")
    vae.half().save_pretrained(root / "vae", variant="fp16")
    (root / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "PixArtAlphaPipeline",
                "text_encoder": ["transformers", "T5EncoderModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            }
        )
    )
    return root


pipeline = build_pipeline(work / "tiny-pipeline")

vae = resolve_ckpt_dir(pipeline, subfolder="vae", variant="fp16")
print(f"vae (fp16):    {[p.name for p in vae.weight_files]}")
encoder = resolve_ckpt_dir(pipeline, subfolder="text_encoder")
print(f"text_encoder:  {len(encoder.weight_files)} shards, index {encoder.index_file.name}")

try:
    resolve_ckpt_dir("PixArt-alpha/PixArt-XL-2-1024-MS", subfolder="vae", variant="fp16")
except CheckpointNotFoundError as exc:
    print("offline and not cached ->", type(exc).__name__)
    print(exc)

shutil.rmtree(work)
