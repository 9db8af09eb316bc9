"""Core ML wants one file: resave a sharded diffusers UNet as a single diffusion_pytorch_model.safetensors.

diffusers shards anything above ``max_shard_size`` (10GB), so an SDXL UNet comes as several shards,
which Core ML conversion scripts cannot read. ``resave(..., max_shard_size=None)`` streams the shards
into one file, copying tensor bytes file to file, and the result appears atomically.

Run: python examples/resave_single_file.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from diffusers import UNet2DConditionModel

from ckptkit import resave


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
            block_out_channels=(16, 32), norm_num_groups=8, cross_attention_dim=16, attention_head_dim=4,
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        ).eval()  # fmt: skip
        # A tiny stand-in for the 10 GB shards of an SDXL UNet.
        unet.save_pretrained(root / "unet", max_shard_size="100KB")
        print("sharded:", sorted(p.name for p in (root / "unet").iterdir()))

        ckpt = resave(root / "unet", root / "unet-single", max_shard_size=None)
        print("single: ", sorted(p.name for p in ckpt.path.iterdir()))

        sample, text = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 16)
        with torch.no_grad():
            want = unet(sample, 10, encoder_hidden_states=text).sample
            got = UNet2DConditionModel.from_pretrained(ckpt.path)(
                sample, 10, encoder_hidden_states=text
            ).sample
        assert torch.equal(got, want)
        print("outputs identical:", torch.equal(got, want))


if __name__ == "__main__":
    main()
