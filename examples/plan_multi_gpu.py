"""Plan per-device memory from headers alone: replicate vs FSDP vs offload.

Builds a tiny PixArt transformer with diffusers' ``save_pretrained``, then asks ``plan_memory``
whether its weights fit on 1 or 4 devices of a (deliberately tiny) memory size. The same call
on a real 14B DiT is the worked example in docs/guides/multi-gpu.md.

Run: ``python examples/plan_multi_gpu.py``
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from diffusers import PixArtTransformer2DModel

from ckptkit import plan_memory
from ckptkit.format.sizes import format_size


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = PixArtTransformer2DModel(
            num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=8, num_layers=4,
            cross_attention_dim=16, caption_channels=32, sample_size=8, patch_size=2, norm_num_groups=4,
        )  # fmt: skip
        model.save_pretrained(Path(tmp) / "transformer")

        for devices in (1, 4):
            plan = plan_memory(
                Path(tmp) / "transformer", devices=devices, device_memory="40KiB", dtype="bf16"
            )
            block = plan.largest_block
            print(
                f"{devices} device(s) x {format_size(plan.device_memory)}: weights {format_size(plan.weights_bytes)}, "
                f"{len(plan.blocks)} blocks (largest {block.name if block else '-'})"
            )
            for estimate in plan.estimates.values():
                mark = "*" if estimate.strategy == plan.strategy else " "
                print(
                    f"  {mark} {estimate.strategy:<9} peak {format_size(estimate.peak_bytes):>10}  "
                    f"headroom {estimate.headroom_bytes:>8} B  fits={estimate.fits}"
                )
        assert plan.estimates["fsdp"].peak_bytes < plan.estimates["replicate"].peak_bytes


if __name__ == "__main__":
    main()
