"""Migrate Wan's native ckpt_dir loading to ckptkit.

A Wan ``ckpt_dir`` holds ``models_t5_umt5-xxl-enc-bf16.pth``, the tokenizer in ``google/umt5-xxl/``,
``Wan2.1_VAE.pth`` and the DiT as ``config.json`` + ``diffusion_pytorch_model*.safetensors`` (Wan2.2
A14B: in ``low_noise_model/`` and ``high_noise_model/``). This builds a tiny Wan2.2-style directory
from real transformers/diffusers models, finds its parts with ``wan_checkpoint`` (missing ones are
reported up front), reads the ``.pth`` files with ``weights_only`` and loads each DiT expert in
bf16 with ``load_dit``. See docs/guides/wan.md.

Run: python examples/migrate_wan.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from ckptkit.shims.wan import load_dit, wan_checkpoint


def build_ckpt_dir(root: Path) -> None:
    torch.manual_seed(0)
    umt5 = UMT5EncoderModel(
        UMT5Config(
            vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, decoder_start_token_id=0,
        )
    )  # fmt: skip
    root.mkdir()
    torch.save(umt5.to(torch.bfloat16).state_dict(), root / "models_t5_umt5-xxl-enc-bf16.pth")
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    torch.save(vae.state_dict(), root / "Wan2.1_VAE.pth")
    for expert in ("low_noise_model", "high_noise_model"):
        WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
            out_channels=4, text_dim=16, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
        ).to(torch.bfloat16).save_pretrained(root / expert, max_shard_size="30KB")  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "Wan2.2-T2V-tiny"
        build_ckpt_dir(root)

        parts = wan_checkpoint(root)  # file names and index headers only
        print("T5 encoder:", parts.t5_checkpoint.name if parts.t5_checkpoint else None)
        print("tokenizer: ", parts.t5_tokenizer)  # not downloaded here: None, not a late crash
        print("VAE:       ", parts.vae_checkpoint.name if parts.vae_checkpoint else None)
        for name, ckpt in sorted(parts.dit.items()):
            print(f"DiT {name or '(root)'}: {len(ckpt.weight_files)} shard(s)")
        print("T5 tensors:", len(parts.t5_state_dict()), " VAE tensors:", len(parts.vae_state_dict()))

        video = torch.randn(1, 4, 2, 8, 8, dtype=torch.bfloat16)
        text = torch.randn(1, 5, 16, dtype=torch.bfloat16)
        for expert in sorted(parts.dit):
            dit = load_dit(parts, WanTransformer3DModel, subfolder=expert, torch_dtype=torch.bfloat16)
            with torch.no_grad():
                out = dit(video, torch.tensor([10]), text).sample
            dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in dit.parameters()})
            print(f"load_dit({expert!r}) -> {type(dit).__name__} {dtypes}, output {tuple(out.shape)}")


if __name__ == "__main__":
    main()
