from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.conformance.opensora._tiny import STDiT3, pixart_release, trained


@pytest.fixture(scope="session")
def hub_repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Served by the ``hub`` fixture: org/OpenSora-STDiT-v3 (model.safetensors, model.pt), org/Open-Sora-v2."""
    root = tmp_path_factory.mktemp("opensora-hub-repos")
    repo = root / "org" / "OpenSora-STDiT-v3"
    repo.mkdir(parents=True)
    save_file(trained(STDiT3), repo / "model.safetensors")
    torch.save(trained(STDiT3), repo / "model.pt")
    v2 = root / "org" / "Open-Sora-v2"
    v2.mkdir(parents=True)
    save_file(trained(STDiT3, seed=5), v2 / "Open_Sora_v2.safetensors")
    sigma = root / "PixArt-alpha" / "PixArt-Sigma"
    sigma.mkdir(parents=True)
    torch.save(pixart_release(seed=6, caption_len=4), sigma / "PixArt-Sigma-XL-2-512-MS.pth")
    # the 1.2/1.3 hub release of STDiT3 (a transformers PreTrainedModel): config.json + model.safetensors
    hf_stdit3 = root / "hpcai-tech" / "OpenSora-STDiT-v3"
    pretrained_stdit3().save_pretrained(hf_stdit3)
    (hf_stdit3 / "README.md").write_text("a model card, never fetched by a loader")
    torch.save({"never": torch.zeros(1)}, hf_stdit3 / "training_state.pt")
    # 1.2's VAE: the SDXL VAE its spatial part loads while being built, and the pipeline release
    sdxl_vae = root / "PixArt-alpha" / "pixart_sigma_sdxlvae_T5_diffusers" / "vae"
    sd_vae().save_pretrained(sdxl_vae)
    pretrained_vae_pipeline(str(sdxl_vae)).save_pretrained(root / "hpcai-tech" / "OpenSora-VAE-v1.2")
    return root


def sd_vae(seed: int = 10):
    """A tiny SD-style image VAE (four blocks: the 8x factor VideoAutoencoderKL assumes)."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(4, 4, 4, 4),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=2,
    )


def pretrained_vae_pipeline(spatial: str, seed: int = 11):
    """Open-Sora 1.2's VideoAutoencoderPipeline (its verbatim class) with every floating tensor random."""
    from tests.conformance.opensora._upstream_vae_pipeline import (
        VideoAutoencoderPipeline,
        VideoAutoencoderPipelineConfig,
    )

    config = VideoAutoencoderPipelineConfig(
        vae_2d=dict(type="VideoAutoencoderKL", from_pretrained=spatial, micro_batch_size=4),
        vae_temporal=dict(type="VAE_Temporal_SD", from_pretrained=None),
        micro_frame_size=17,
        shift=(-0.10, 0.34, 0.27, 0.98),
        scale=(3.85, 2.32, 2.33, 3.06),
    )
    model = VideoAutoencoderPipeline(config)
    torch.manual_seed(seed)
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.normal_(std=0.2)
    return model


def pretrained_stdit3(seed: int = 8):
    """A tiny STDiT3 (the PreTrainedModel stand-in) with every floating tensor random."""
    from tests.conformance.opensora._upstream_stdit3 import STDiT3, STDiT3Config

    torch.manual_seed(seed)
    config = STDiT3Config(
        in_channels=4, hidden_size=8, depth=2, num_heads=2, caption_channels=6, model_max_length=3
    )
    model = STDiT3(config)
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.normal_()
    return model
