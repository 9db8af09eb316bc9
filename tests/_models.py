"""Tiny real models saved by the real libraries, for tests and examples.

Every checkpoint ckptkit is tested on is written here by transformers' or diffusers'
``save_pretrained`` (sharded, single, with variants); the legacy-variant copy is the one place
files are renamed by hand, exactly as diffusers 0.29-0.30 named them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch


def _tiny_t5_config(config_class):
    return config_class(
        vocab_size=99,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
    )


def build_t5(seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(_tiny_t5_config(T5Config)).eval()


def build_vae(seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    ).eval()


def build_pixart(seed: int = 0):
    from diffusers import PixArtTransformer2DModel

    torch.manual_seed(seed)
    return PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        cross_attention_dim=16,
        caption_channels=32,
        sample_size=8,
        patch_size=2,
        norm_num_groups=4,
    ).eval()


def to_legacy_variant_names(directory: Path) -> None:
    """Rename current-scheme variant shards and index to the legacy (diffusers 0.29-0.30) scheme."""
    for index_path in list(directory.glob("*.safetensors.index.*.json")):
        stem, _, rest = index_path.name.partition(".safetensors.index.")
        variant = rest[: -len(".json")]
        index = json.loads(index_path.read_text())
        renamed = {}
        for shard in sorted(set(index["weight_map"].values())):
            # name.fp16-00001-of-00002.safetensors -> name-00001-of-00002.fp16.safetensors
            numbering = shard[len(f"{stem}.{variant}") : -len(".safetensors")]
            renamed[shard] = f"{stem}{numbering}.{variant}.safetensors"
            (directory / shard).rename(directory / renamed[shard])
        index["weight_map"] = {k: renamed[v] for k, v in index["weight_map"].items()}
        (directory / f"{stem}.safetensors.{variant}.index.json").write_text(json.dumps(index, indent=2))
        index_path.unlink()


def save_layouts(root: Path) -> dict[str, Path]:
    """Write every layout the tests use under ``root``; returns name -> directory."""
    root = Path(root)
    t5, vae, pixart = build_t5(), build_vae(), build_pixart()
    out: dict[str, Path] = {}

    out["t5_sharded"] = root / "t5_sharded"
    t5.save_pretrained(out["t5_sharded"], max_shard_size="20KB")
    out["t5_single"] = root / "t5_single"
    t5.save_pretrained(out["t5_single"])
    out["t5_variants"] = root / "t5_variants"
    t5.save_pretrained(out["t5_variants"], max_shard_size="20KB")
    build_t5().half().save_pretrained(out["t5_variants"], max_shard_size="20KB", variant="fp16")
    out["t5_fp16_only"] = root / "t5_fp16_only"
    build_t5().half().save_pretrained(out["t5_fp16_only"], max_shard_size="20KB", variant="fp16")
    out["t5_bin"] = root / "t5_bin"
    t5.save_pretrained(out["t5_bin"], safe_serialization=False) if _transformers_saves_bin() else _save_bin(
        t5, out["t5_bin"]
    )

    out["vae_variants"] = root / "vae_variants"
    vae.save_pretrained(out["vae_variants"], max_shard_size="50KB")
    build_vae().half().save_pretrained(out["vae_variants"], max_shard_size="50KB", variant="fp16")
    out["vae_legacy"] = root / "vae_legacy"
    build_vae().half().save_pretrained(out["vae_legacy"], max_shard_size="50KB", variant="fp16")
    to_legacy_variant_names(out["vae_legacy"])

    out["pixart"] = root / "pixart"
    pixart.save_pretrained(out["pixart"])
    build_pixart().half().save_pretrained(out["pixart"], variant="fp16")

    pipeline = out["pipeline"] = root / "pipeline"
    t5.save_pretrained(pipeline / "text_encoder", max_shard_size="20KB")
    vae.save_pretrained(pipeline / "vae", max_shard_size="50KB")
    build_vae().half().save_pretrained(pipeline / "vae", max_shard_size="50KB", variant="fp16")
    pixart.save_pretrained(pipeline / "transformer")
    (pipeline / "scheduler").mkdir()
    (pipeline / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DPMSolverMultistepScheduler"})
    )
    (pipeline / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": "PixArtAlphaPipeline",
                "_diffusers_version": "0.42.1",
                "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
                "text_encoder": ["transformers", "T5EncoderModel"],
                "tokenizer": [None, None],
                "transformer": ["diffusers", "PixArtTransformer2DModel"],
                "vae": ["diffusers", "AutoencoderKL"],
            },
            indent=2,
        )
    )
    return out


def _transformers_saves_bin() -> bool:
    import inspect

    from transformers import PreTrainedModel

    return "safe_serialization" in inspect.signature(PreTrainedModel.save_pretrained).parameters


def _save_bin(model, directory: Path) -> None:
    # transformers v5 writes only safetensors; a .bin checkpoint is what torch.save of the state
    # dict next to the config gives, as transformers v4 wrote it.
    directory.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(directory)
    torch.save(model.state_dict(), directory / "pytorch_model.bin")


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --- adapters and shims (issue #6): more tiny real classes, a tokenizer built offline --------------

TOKENIZER_WORDS = [
    "a",
    "cat",
    "dog",
    "on",
    "the",
    "mat",
    "sits",
    "runs",
    "red",
    "blue",
    "big",
    "small",
    "video",
    "of",
]


def build_tokenizer():
    """A tiny word-level tokenizer (T5-style: ``</s>`` appended, ``<pad>`` = 0), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(TOKENIZER_WORDS)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        # what T5's tokenizers return (transformers 4.x adds token_type_ids for a generic tokenizer)
        model_input_names=["input_ids", "attention_mask"],
    )


def build_umt5(seed: int = 0):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    return UMT5EncoderModel(_tiny_t5_config(UMT5Config)).eval()


def build_wan_dit(seed: int = 0):
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=4,
        text_dim=16,
        freq_dim=16,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()


def build_wan_vae(seed: int = 0):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()


def build_ltx_dit(seed: int = 0):
    from diffusers import LTXVideoTransformer3DModel

    torch.manual_seed(seed)
    return LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=2,
        attention_head_dim=8,
        cross_attention_dim=16,
        num_layers=1,
        caption_channels=16,
    ).eval()


def build_ltx_vae(seed: int = 0):
    from diffusers import AutoencoderKLLTXVideo

    torch.manual_seed(seed)
    return AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    ).eval()


def write_model_index(directory: Path, class_name: str, components: dict[str, list]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    body = {"_class_name": class_name, "_diffusers_version": "0.42.1", **components}
    (directory / "model_index.json").write_text(json.dumps(body, indent=2))
