"""Migrate LTX-Video's single-file loading to ckptkit.

LTX-Video ships one ``.safetensors`` per release: a ``config`` JSON (transformer / vae / scheduler
parts) in its metadata, transformer weights prefixed ``model.diffusion_model.`` and VAE weights
``vae.``. This writes a tiny file of that shape from real diffusers models, reads its embedded
config back with ``read_single_file`` (no tensor data read), then loads the transformer with
``create_transformer`` and the VAE with ``load_component``, as ``ltx_video.inference`` would.
See docs/guides/ltx-video.md.

Run: python examples/migrate_ltx.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
from safetensors.torch import save_file

# before: from ltx_video.inference import create_transformer
from ckptkit.shims.ltx import create_transformer, load_component, read_single_file


def write_single_file(path: Path) -> None:
    """A tiny LTX-Video release file, built from diffusers' own LTX classes."""
    torch.manual_seed(0)
    dit = LTXVideoTransformer3DModel(
        in_channels=8, out_channels=8, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, num_layers=1, caption_channels=16,
    )  # fmt: skip
    vae = AutoencoderKLLTXVideo(
        latent_channels=8, block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1), decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False,) * 5, upsample_residual=(False,) * 4, upsample_factor=(1,) * 4,
        timestep_conditioning=False, patch_size=1, patch_size_t=1,
    )  # fmt: skip
    config = {
        "transformer": dict(dit.config),
        "vae": dict(vae.config),
        "scheduler": {"_class_name": "RectifiedFlowScheduler", "shifting": "SD3"},
    }
    state = {f"model.diffusion_model.{k}": v for k, v in dit.state_dict().items()}
    state |= {f"vae.{k}": v for k, v in vae.state_dict().items()}
    save_file(state, path, metadata={"config": json.dumps(config), "format": "pt"})


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ltxv-tiny.safetensors"
        write_single_file(path)

        single = read_single_file(path)
        print("file:", single.path.name)
        print("embedded config parts:", sorted(single.config))
        print("transformer:", single.transformer_config["num_layers"], "layer(s),",
              single.transformer_config["num_attention_heads"], "heads")  # fmt: skip
        print("scheduler:", single.scheduler_config["_class_name"])
        for component in ("transformer", "vae"):
            print(f"{component} tensors:", len(single.state_dict(component)))

        transformer = create_transformer(str(path), "bfloat16", model_class=LTXVideoTransformer3DModel)
        print("create_transformer ->", type(transformer).__name__, transformer.dtype)
        vae = load_component(single, "vae", AutoencoderKLLTXVideo)
        with torch.no_grad():
            latents = vae.encode(torch.randn(1, 3, 5, 16, 16)).latent_dist.mode()
        print("load_component('vae') ->", type(vae).__name__, "latents", tuple(latents.shape))


if __name__ == "__main__":
    main()
