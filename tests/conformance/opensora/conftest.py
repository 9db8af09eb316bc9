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
    return root


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
