"""Migrate Wan2.1 / Wan2.2 loading to ckptkit: one import line, or ``install()`` and no line at all.

Needs Wan itself (``pip install wan22``, or a Wan2.1/Wan2.2 checkout): the model classes are its own.
This writes a tiny Wan2.2 A14B-style ``ckpt_dir`` — the DiT experts as ``config.json`` +
``diffusion_pytorch_model*.safetensors`` in ``low_noise_model/`` and ``high_noise_model/``, the VAE as
``Wan2.2_VAE.pth`` with Wan's native key names (``encoder.conv1.weight``...) — and loads it the way
Wan's ``text2video.py`` does. See docs/guides/wan.md.

Run: python examples/migrate_wan.py
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

import ckptkit.shims.wan

# before: from wan.modules.vae2_2 import Wan2_2_VAE; WanModel.from_pretrained(ckpt_dir, subfolder=...)
from ckptkit.shims.wan import Wan2_2_VAE, load_dit, wan_checkpoint

DIT = {
    "in_dim": 4,
    "dim": 16,
    "ffn_dim": 32,
    "freq_dim": 16,
    "out_dim": 4,
    "num_heads": 2,
    "num_layers": 2,
    "text_len": 8,
}


def write_ckpt_dir(root: Path) -> None:
    from wan.modules.model import WanModel
    from wan.modules.vae2_2 import WanVAE_

    torch.manual_seed(0)
    for expert in ("low_noise_model", "high_noise_model"):
        WanModel(**DIT).to(torch.bfloat16).save_pretrained(root / expert, max_shard_size="40KB")
    vae = WanVAE_(
        dim=8,
        z_dim=48,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=2,
        attn_scales=[],
        temperal_downsample=[False, True, True],
    )
    torch.save(vae.state_dict(), root / "Wan2.2_VAE.pth")


def main() -> None:
    from wan.modules.model import WanModel
    from wan.modules.vae2_2 import Wan2_2_VAE as WansOwnVAE

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "Wan2.2-T2V-A14B-tiny"
        write_ckpt_dir(root)
        parts = wan_checkpoint(root)
        print("DiT experts:", sorted(parts.dit), "VAE:", parts.vae_checkpoint.name)

        # 1. the one-line migration: Wan's calls, ckptkit's import
        low = load_dit(root, subfolder="low_noise_model")  # WanModel.from_pretrained(root, subfolder=...)
        print(
            "load_dit ->", type(low).__name__, next(low.parameters()).dtype, "(float32, as from_pretrained)"
        )
        vae = Wan2_2_VAE(vae_pth=str(root / "Wan2.2_VAE.pth"), c_dim=8, device="cpu")
        print("Wan2_2_VAE ->", type(vae).__name__, "with", sum(1 for _ in vae.model.parameters()), "tensors")

        # 2. no line changed: Wan's own classes, loading through ckptkit
        with ckptkit.shims.wan.installed():
            high = WanModel.from_pretrained(root, subfolder="high_noise_model")
            same_vae = WansOwnVAE(vae_pth=str(root / "Wan2.2_VAE.pth"), c_dim=8, device="cpu")
        print("installed(): WanModel.from_pretrained ->", type(high).__name__, next(high.parameters()).dtype)
        equal = all(
            torch.equal(a, b)
            for a, b in zip(
                vae.model.state_dict().values(), same_vae.model.state_dict().values(), strict=True
            )
        )
        print("same VAE weights both ways:", equal)


if __name__ == "__main__":
    main()
