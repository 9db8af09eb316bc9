from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests import _models
from tests._versions import Layouts, has_diffusers_classes


@pytest.fixture(scope="session")
def more_layouts(layouts: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Layouts of the classes beyond the shared ones, written by save_pretrained (read-only use)."""
    root = tmp_path_factory.mktemp("adapter_layouts")
    out = Layouts()
    tokenizer = _models.build_tokenizer()

    out["umt5"] = root / "umt5"
    _models.build_umt5().save_pretrained(out["umt5"], max_shard_size="20KB")
    tokenizer.save_pretrained(out["umt5"])

    wan, ltx = (
        ("WanTransformer3DModel", "AutoencoderKLWan"),
        ("LTXVideoTransformer3DModel", "AutoencoderKLLTXVideo"),
    )
    if has_diffusers_classes(*wan):
        out["wan_dit"] = root / "wan_dit"
        _models.build_wan_dit().save_pretrained(out["wan_dit"], max_shard_size="30KB")
        _models.build_wan_dit().to(torch.bfloat16).save_pretrained(
            out["wan_dit"], max_shard_size="30KB", variant="bf16"
        )
        out["wan_vae"] = root / "wan_vae"
        _models.build_wan_vae().save_pretrained(out["wan_vae"])
    else:
        out.unbuilt |= dict.fromkeys(("wan_dit", "wan_vae", "wan_pipeline"), f"diffusers has no {wan}")
    if has_diffusers_classes(*ltx):
        out["ltx_dit"] = root / "ltx_dit"
        _models.build_ltx_dit().save_pretrained(out["ltx_dit"], max_shard_size="20KB")
        out["ltx_vae"] = root / "ltx_vae"
        _models.build_ltx_vae().half().save_pretrained(out["ltx_vae"], variant="fp16")
    else:
        out.unbuilt |= dict.fromkeys(("ltx_dit", "ltx_vae"), f"diffusers has no {ltx}")

    out["pixart_legacy"] = legacy = root / "pixart_legacy"
    _models.build_pixart().save_pretrained(legacy)
    config = (legacy / "config.json").read_text()
    (legacy / "config.json").write_text(config.replace('"PixArtTransformer2DModel"', '"Transformer2DModel"'))

    out["pixart_pipeline"] = pipeline = root / "pixart_pipeline"
    shutil.copytree(layouts["pipeline"], pipeline)
    tokenizer.save_pretrained(pipeline / "tokenizer")

    if "wan_pipeline" in out.unbuilt:
        return out
    out["wan_pipeline"] = wan_dir = root / "wan_pipeline"
    _models.build_umt5().save_pretrained(wan_dir / "text_encoder")
    tokenizer.save_pretrained(wan_dir / "tokenizer")
    _models.build_wan_vae().save_pretrained(wan_dir / "vae")
    _models.build_wan_dit().save_pretrained(wan_dir / "transformer", max_shard_size="30KB")
    _models.write_model_index(
        wan_dir,
        "WanPipeline",
        {
            "scheduler": ["diffusers", "UniPCMultistepScheduler"],
            "text_encoder": ["transformers", "UMT5EncoderModel"],
            "tokenizer": ["transformers", "T5TokenizerFast"],
            "transformer": ["diffusers", "WanTransformer3DModel"],
            "vae": ["diffusers", "AutoencoderKLWan"],
        },
    )
    return out
