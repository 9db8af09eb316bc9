"""Inspect and verify a checkpoint offline: structure, hashes, a manifest, and a damaged copy.

Builds a tiny PixArt transformer with diffusers' own ``save_pretrained`` (default and fp16 weights)
in a temporary directory, then:

1. ``inspect_checkpoint`` — what it holds, from the headers alone;
2. ``verify_checkpoint(..., write_manifest=True)`` — structure checks, then ``SHA256SUMS`` written;
3. flips one byte of the weights and verifies again: the damaged file is named.

Run: ``python examples/inspect_and_verify.py``
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from diffusers import PixArtTransformer2DModel

from ckptkit import inspect_checkpoint, verify_checkpoint


def build_tiny_pixart(directory: Path) -> Path:
    torch.manual_seed(0)
    model = PixArtTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=2,
        cross_attention_dim=16, caption_channels=32, sample_size=8, patch_size=2, norm_num_groups=4,
    )  # fmt: skip
    model.save_pretrained(directory)
    model.half().save_pretrained(directory, variant="fp16")
    return directory


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = build_tiny_pixart(Path(tmp) / "transformer")

        info = inspect_checkpoint(ckpt)
        print(f"selected: {info.selected}; variants: {', '.join(info.variants)}")
        print(f"tensors: {info.tensor_count}, parameters: {info.parameter_count:,}, ok: {info.ok}")

        report = verify_checkpoint(ckpt, write_manifest=True, progress=False)
        print(
            f"verify: ok={report.ok}, files={len(report.files)}, manifest={Path(report.manifest_written or '').name}"
        )

        again = verify_checkpoint(ckpt, progress=False)
        print(f"verify against SHA256SUMS: {len(again.verified)} of {len(again.files)} files match")
        assert again.ok and len(again.verified) == len(again.files)

        weights = ckpt / "diffusion_pytorch_model.fp16.safetensors"
        with open(weights, "r+b") as handle:  # flip the last byte of tensor data
            handle.seek(-1, 2)
            last = handle.read(1)
            handle.seek(-1, 2)
            handle.write(bytes([last[0] ^ 0xFF]))
        damaged = verify_checkpoint(ckpt, progress=False)
        assert not damaged.ok
        for problem in damaged.problems:
            print(f"{problem.severity}: {problem.message.replace(str(ckpt), '<ckpt>')[:120]}...")


if __name__ == "__main__":
    main()
