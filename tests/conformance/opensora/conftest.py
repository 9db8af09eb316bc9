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
    return root
