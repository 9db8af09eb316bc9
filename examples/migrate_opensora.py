"""Migrate Open-Sora's loaders to ckptkit: one import line, or ``install()`` and no code change at all.

Builds, in a temporary directory and with the real libraries, what Open-Sora loads: a T5 encoder
with its tokenizer (laid out as DeepFloyd/t5-v1_1-xxl), a PixArt-Sigma release ``.pth`` (the state
dict under ``"state_dict"``, a 2D patch embedding, fewer caption rows than the model) and an
Open-Sora 2.0 ``.safetensors``. Then:

1. Open-Sora 1.3's text path, ``encode(**tokenize_fn(prompts))`` as its schedulers call it;
2. 1.2/1.3 ``load_checkpoint`` filling an STDiT3 from the PixArt release: ``blocks.*`` become
   ``spatial_blocks.*``, the patch embedding gets its time axis, the caption table is padded with
   the release's last row (as upstream's ``reparameter``);
3. 2.0 ``load_checkpoint`` (``opensora/utils/ckpt.py``) under its own name;
4. ``install()``: an importable ``opensora`` package (here a two-module stand-in whose builder
   imports ``load_checkpoint`` by name, as Open-Sora's model files do) patched in place, so its
   unchanged builder loads through ckptkit; ``uninstall()`` puts it back.

See docs/guides/open-sora.md. Run: python examples/migrate_opensora.py
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import textwrap
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch import nn
from transformers import PreTrainedTokenizerFast, T5Config, T5EncoderModel

import ckptkit.shims.opensora

# before: from opensora.models.text_encoder.t5 import T5Encoder
#         from opensora.utils.ckpt_utils import load_checkpoint   (1.2 / 1.3)
#         from opensora.utils.ckpt import load_checkpoint         (2.0: load_checkpoint_v2 as load_checkpoint)
from ckptkit.shims.opensora import T5Encoder, load_checkpoint, load_checkpoint_v2


def save_t5(directory: Path) -> None:
    """A tiny T5 encoder and word-level tokenizer, laid out as DeepFloyd/t5-v1_1-xxl is."""
    words = ["a", "cat", "dog", "on", "the", "mat", "sits", "runs", "red", "video", "of"]
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        # what T5's tokenizer returns (transformers 4.x would add token_type_ids otherwise)
        model_input_names=["input_ids", "attention_mask"],
    )
    config = T5Config(
        vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, decoder_start_token_id=0,
    )  # fmt: skip
    T5EncoderModel(config).save_pretrained(directory, max_shard_size="20KB")
    tokenizer.save_pretrained(directory)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(8, 8)


class STDiT3(nn.Module):
    """Open-Sora's STDiT3 parameter names, tiny (load_checkpoint goes by the names and the class name)."""

    def __init__(self, caption_len: int = 6) -> None:
        super().__init__()
        self.x_embedder = nn.Module()
        self.x_embedder.proj = nn.Conv3d(4, 8, kernel_size=(1, 2, 2), stride=(1, 2, 2))
        self.y_embedder = nn.Module()
        self.y_embedder.y_embedding = nn.Parameter(torch.zeros(caption_len, 8))
        self.spatial_blocks = nn.ModuleList(Block() for _ in range(2))
        self.temporal_blocks = nn.ModuleList(Block() for _ in range(2))


def pixart_sigma_release(path: Path) -> dict[str, torch.Tensor]:
    """A PixArt-Sigma ``.pth``: ``{"state_dict": ...}``, Conv2d patch embedding, 4 caption rows."""
    state = {
        "x_embedder.proj.weight": torch.randn(8, 4, 2, 2),
        "x_embedder.proj.bias": torch.randn(8),
        "y_embedder.y_embedding": torch.randn(4, 8),
        "pos_embed": torch.randn(1, 16, 8),
        **{f"blocks.{i}.attn.{p}": torch.randn(8, 8) if p == "weight" else torch.randn(8) for i in range(2) for p in ("weight", "bias")},
    }  # fmt: skip
    torch.save({"state_dict": state}, path)
    return state


def stand_in_opensora(root: Path) -> None:
    """Two modules at Open-Sora 1.3's paths: ckpt_utils.load_checkpoint and a builder importing it."""
    (root / "opensora" / "utils").mkdir(parents=True)
    (root / "opensora" / "models").mkdir()
    for package in ("opensora", "opensora/utils", "opensora/models"):
        (root / package / "__init__.py").write_text("")
    (root / "opensora" / "utils" / "ckpt_utils.py").write_text(
        textwrap.dedent("""
        import torch

        def load_checkpoint(model, ckpt_path, save_as_pt=False, model_name="model", strict=False):
            # stands in for Open-Sora's own: torch.load and load_state_dict as they are
            model.load_state_dict(torch.load(ckpt_path), strict=strict)
        """)
    )
    (root / "opensora" / "models" / "stdit3.py").write_text(
        textwrap.dedent("""
        from opensora.utils.ckpt_utils import load_checkpoint

        def STDiT3_XL_2(model, from_pretrained=None):
            if from_pretrained is not None:
                load_checkpoint(model, from_pretrained)
            return model
        """)
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)

        # 1. Open-Sora 1.3's T5Encoder, called as its rf/dpms/iddpm schedulers call it
        save_t5(root / "t5-v1_1-xxl")
        text_encoder = T5Encoder(from_pretrained=root / "t5-v1_1-xxl", model_max_length=10, device="cpu")
        out = text_encoder.encode(**text_encoder.tokenize_fn(["a red cat sits on the mat", "a dog"]))
        print(
            "T5Encoder.encode(**tokenize_fn(prompts)): y",
            tuple(out["y"].shape),
            "mask",
            tuple(out["mask"].shape),
        )

        # 2. load_checkpoint: an STDiT3 from a PixArt-Sigma release
        release = pixart_sigma_release(root / "PixArt-Sigma-XL-2-2K-MS.pth")
        model = load_checkpoint(STDiT3(caption_len=6), root / "PixArt-Sigma-XL-2-2K-MS.pth")
        assert torch.equal(model.spatial_blocks[1].attn.weight, release["blocks.1.attn.weight"])
        assert torch.equal(model.x_embedder.proj.weight, release["x_embedder.proj.weight"].unsqueeze(2))
        stored = release["y_embedder.y_embedding"]
        assert torch.equal(model.y_embedder.y_embedding, torch.cat([stored, stored[-1:], stored[-1:]]))
        print("load_checkpoint: blocks -> spatial_blocks, 2D -> 3D patch embedding, 4 -> 6 caption rows")

        # 3. Open-Sora 2.0's load_checkpoint(model, path, cache_dir, device_map, cai_model_name, strict, rename_keys)
        save_file(model.state_dict(), root / "Open_Sora_v2.safetensors")
        v2 = load_checkpoint_v2(
            STDiT3(), str(root / "Open_Sora_v2.safetensors"), device_map="cpu", strict=True
        )
        assert all(torch.equal(v2.state_dict()[k], v) for k, v in model.state_dict().items())
        print("load_checkpoint_v2: Open_Sora_v2.safetensors, strict, every tensor equal")

        # 4. install(): the package's own builder, unchanged, loads through ckptkit
        stand_in_opensora(root / "site")
        sys.path.insert(0, str(root / "site"))
        try:
            stdit3 = importlib.import_module("opensora.models.stdit3")
            with ckptkit.shims.opensora.installed() as patched:
                print("install() patched:", ", ".join(patched))
                built = stdit3.STDiT3_XL_2(
                    STDiT3(), from_pretrained=str(root / "PixArt-Sigma-XL-2-2K-MS.pth")
                )
                assert torch.equal(built.spatial_blocks[0].attn.weight, release["blocks.0.attn.weight"])
            assert stdit3.load_checkpoint is not ckptkit.shims.opensora.load_checkpoint
            print("uninstall(): Open-Sora's own load_checkpoint is back")
        finally:
            sys.path.remove(str(root / "site"))
            for name in [n for n in sys.modules if n == "opensora" or n.startswith("opensora.")]:
                del sys.modules[name]


if __name__ == "__main__":
    main()
