from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests import _models
from tests._versions import Layouts, has_diffusers_classes


@pytest.fixture(scope="session")
def shim_layouts(layouts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The projects' native layouts, built from real models' state dicts (read-only use)."""
    root = tmp_path_factory.mktemp("shim_layouts")
    out = Layouts()
    tokenizer = _models.build_tokenizer()

    # Open-Sora: a T5 directory with its tokenizer (as DeepFloyd/t5-v1_1-xxl is laid out)
    out["t5_with_tokenizer"] = root / "t5-v1_1-xxl"
    shutil.copytree(layouts["t5_sharded"], out["t5_with_tokenizer"])
    tokenizer.save_pretrained(out["t5_with_tokenizer"])

    # LTX-Video: a PixArt-like repo for the text encoder, and single files
    out["pixart_repo"] = root / "PixArt-XL-2-1024-MS"
    shutil.copytree(layouts["pipeline"], out["pixart_repo"])
    tokenizer.save_pretrained(out["pixart_repo"] / "tokenizer")
    ltx, wan = (
        ("LTXVideoTransformer3DModel", "AutoencoderKLLTXVideo"),
        ("WanTransformer3DModel", "AutoencoderKLWan"),
    )
    if has_diffusers_classes(*ltx):
        _ltx_single_files(root, out)
    else:
        out.unbuilt |= dict.fromkeys(
            ("ltx_single", "ltx_single_bf16", "ltx_no_config"), f"diffusers has no {ltx}"
        )
    if has_diffusers_classes(*wan):
        _wan_roots(root, out, tokenizer)
    else:
        out.unbuilt |= dict.fromkeys(("wan21", "wan22"), f"diffusers has no {wan}")
    return out


def _ltx_single_files(root: Path, out: dict[str, Path]) -> None:
    dit, vae = _models.build_ltx_dit(), _models.build_ltx_vae()
    config = {
        "transformer": dict(dit.config),
        "vae": dict(vae.config),
        "scheduler": {"_class_name": "RectifiedFlowScheduler", "shifting": "SD3"},
    }
    state = {f"model.diffusion_model.{k}": v for k, v in dit.state_dict().items()}
    state |= {f"vae.{k}": v for k, v in vae.state_dict().items()}
    out["ltx_single"] = root / "ltxv-tiny.safetensors"
    save_file(state, out["ltx_single"], metadata={"config": json.dumps(config), "format": "pt"})
    out["ltx_single_bf16"] = root / "ltxv-tiny-bf16.safetensors"
    save_file(
        {k: v.to(torch.bfloat16) for k, v in state.items()},
        out["ltx_single_bf16"],
        metadata={"config": json.dumps(config)},
    )
    out["ltx_no_config"] = root / "ltxv-no-config.safetensors"
    save_file(state, out["ltx_no_config"], metadata={"format": "pt"})


def _wan_roots(root: Path, out: dict[str, Path], tokenizer) -> None:
    # Wan2.1: one DiT in the root; Wan2.2 A14B: two experts in subfolders
    out["wan21"] = wan21 = root / "Wan2.1-T2V-tiny"
    wan21.mkdir()
    umt5 = _models.build_umt5().to(torch.bfloat16)
    torch.save(umt5.state_dict(), wan21 / "models_t5_umt5-xxl-enc-bf16.pth")
    tokenizer.save_pretrained(wan21 / "google" / "umt5-xxl")
    torch.save(_models.build_wan_vae().state_dict(), wan21 / "Wan2.1_VAE.pth")
    _models.build_wan_dit().to(torch.bfloat16).save_pretrained(wan21, max_shard_size="30KB")
    out["wan22"] = wan22 = root / "Wan2.2-T2V-tiny"
    wan22.mkdir()
    torch.save(umt5.state_dict(), wan22 / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save(_models.build_wan_vae(seed=1).state_dict(), wan22 / "Wan2.2_VAE.pth")
    _models.build_wan_dit(seed=2).to(torch.bfloat16).save_pretrained(
        wan22 / "low_noise_model", max_shard_size="30KB"
    )
    _models.build_wan_dit(seed=3).to(torch.bfloat16).save_pretrained(
        wan22 / "high_noise_model", max_shard_size="30KB"
    )


@pytest.fixture(scope="session")
def hub_repos(shim_layouts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repos the shims fetch from, served by the ``hub`` fixture of tests/conftest.py.

    org/t5: T5 + tokenizer (Open-Sora's T5 repo); org/PixArt-XL-2-1024-MS: a PixArt pipeline with a
    tokenizer (LTX-Video's text encoder repo); org/LTX-Video: two single files; org/OpenSora-STDiT:
    a model.safetensors.
    """
    from tests.shims.test_opensora import trained_state

    root = tmp_path_factory.mktemp("shim-hub-repos")
    org = root / "org"
    shutil.copytree(shim_layouts["t5_with_tokenizer"], org / "t5")
    shutil.copytree(shim_layouts["pixart_repo"], org / "PixArt-XL-2-1024-MS")
    if "ltx_single" in shim_layouts:  # built where diffusers has the LTX-Video classes
        (org / "LTX-Video").mkdir(parents=True)
        shutil.copy(shim_layouts["ltx_single"], org / "LTX-Video" / "ltxv-tiny.safetensors")
        shutil.copy(shim_layouts["ltx_single_bf16"], org / "LTX-Video" / "ltxv-tiny-bf16.safetensors")
    (org / "OpenSora-STDiT").mkdir()
    save_file(trained_state(), org / "OpenSora-STDiT" / "model.safetensors")
    return root
