"""ckptkit demo: the whole job on a tiny pipeline built on the spot — offline, in seconds.

It saves a tiny PixArt-shaped pipeline with the real ``save_pretrained`` of diffusers and
transformers (a sharded transformer with an fp16 variant, a VAE, a T5 text encoder), lays it out as
a Hugging Face hub cache (``models--demo--tiny-pipeline/blobs``, ``snapshots/<commit>``, ``refs/main``),
then runs every verb on it as a user would, printing what each step did and wrote.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ckptkit.cli._common import EXIT_OK, EXIT_PROBLEMS, add_command
from ckptkit.errors import CkptError
from ckptkit.format.sizes import format_size

REPO_ID = "demo/tiny-pipeline"
COMMIT = "d" * 40
_LFS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def add_demo(sub: Any) -> None:
    parser = add_command(
        sub,
        "demo",
        help="see the whole job on a tiny pipeline built on the spot (offline, seconds)",
        description="Build a tiny real pipeline with diffusers and transformers (a sharded transformer "
        "with an fp16 variant, a VAE, a text encoder) in a hub-cache layout, then resolve, inspect, load "
        "it into a meta-device model, resave it to one file and verify the copy, printing each step. "
        "Needs the [hf] extra; makes no network request.",
        examples=["ckptkit demo", "ckptkit demo --dir ./ckptkit-demo   # keep the files to look at"],
    )
    parser.add_argument("--dir", help="work in this directory and keep it (default: a temporary one)")
    parser.set_defaults(run=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    if args.dir:
        directory = Path(args.dir).expanduser().resolve()
        if directory.exists() and any(directory.iterdir()):
            raise ValueError(f"{directory}: --dir must be a new or empty directory")
        directory.mkdir(parents=True, exist_ok=True)
        return run_demo(directory)
    with tempfile.TemporaryDirectory(prefix="ckptkit-demo-") as tmp:
        return run_demo(Path(tmp))


def run_demo(directory: Path, write: Callable[[str], None] = print) -> int:
    """Run the demo in ``directory``; returns the exit code (0 when every step worked)."""
    try:
        import diffusers
        import torch
        import transformers
    except ImportError as exc:
        raise CkptError(
            f"the demo builds its pipeline with diffusers and transformers, and {exc.name} is not installed",
            fix='pip install "ckptkit[hf]" (keeps the torch you have)',
        ) from None

    # Imported here, after the check above (and the verbs out of every other command: see
    # cli._common), to keep torch out of the torch-free `ckptkit` CLI start.
    from ckptkit.check.inspect import inspect_checkpoint
    from ckptkit.check.verify import verify_checkpoint  # the same: torch-free start
    from ckptkit.load.sharded import LoadResult, load_sharded  # the same: torch-free start
    from ckptkit.resolve.resolve import resolve_ckpt_dir  # the same: torch-free start
    from ckptkit.save.resave import resave  # the same: torch-free start

    started = time.perf_counter()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.disable_progress_bar()
    versions = f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}"

    def out(text: str) -> None:  # paths under the demo directory are shown as <demo>/...
        write(text.replace(str(directory), "<demo>"))

    write(f"ckptkit demo in {directory} (<demo> below; {versions})\n")

    out("1. build: a tiny pipeline saved by save_pretrained, laid out as a hub cache")
    saved = directory / "saved"
    _save_pipeline(saved)
    cache = directory / "hub"
    snapshot = _to_hub_cache(saved, cache)
    shutil.rmtree(saved)
    for component in ("transformer", "vae", "text_encoder"):
        names = sorted(
            p.name for p in (snapshot / component).iterdir() if p.name.endswith((".safetensors", ".json"))
        )
        out(f"   {component}/: {', '.join(names)}")
    out(f"   cache: {cache / ('models--' + REPO_ID.replace('/', '--'))} (files are links into blobs/)\n")

    out(f"2. resolve {REPO_ID!r}, transformer, fp16 -- from the cache, no network")
    ckpt = resolve_ckpt_dir(
        REPO_ID, subfolder="transformer", variant="fp16", cache_dir=cache, local_files_only=True
    )
    out(f"   {ckpt!r}\n")

    out("3. inspect the pipeline -- headers only, torch is not used")
    info = inspect_checkpoint(snapshot)
    out(_indent(str(info)) + "\n")

    out("4. load the fp16 transformer into a model built on the meta device (no second copy)")
    from accelerate import init_empty_weights
    from diffusers import PixArtTransformer2DModel

    with init_empty_weights():
        model = PixArtTransformer2DModel.from_config(PixArtTransformer2DModel.load_config(ckpt))
    result = load_sharded(ckpt, model=model, progress=False)
    assert isinstance(result, LoadResult)  # a plain module: the keys, bytes, dtypes and time
    out(f"   {result!r}\n")

    out("5. resave it as one file (as Core ML conversion wants), streaming")
    single = resave(ckpt, directory / "transformer-one-file", max_shard_size=None, progress=False)
    for path in single.weight_files:
        out(f"   wrote {path} ({format_size(path.stat().st_size)})")
    out("")

    out("6. verify: the new file with a SHA256SUMS manifest, and the cache against its blob names")
    manifest = verify_checkpoint(single, write_manifest=True, progress=False).manifest_written
    out(f"   wrote {manifest}")
    written = verify_checkpoint(single, progress=False)
    out(f"   {written!r}")
    cached = verify_checkpoint(snapshot, progress=False)
    out(f"   {cached!r}\n")

    ok = info.ok and written.ok and cached.ok and not result.missing_keys
    out(f"{'done' if ok else 'FAILED'} in {time.perf_counter() - started:.1f} s. Next, on a real model:")
    out("   ckptkit inspect PixArt-alpha/PixArt-XL-2-1024-MS            # what it holds (headers only)")
    out(
        "   ckptkit resolve PixArt-alpha/PixArt-XL-2-1024-MS --subfolder vae   # cache first, minimal download"
    )
    out("   ckptkit plan ./your-model/transformer --devices 4 --device-memory 24GiB --dtype bf16")
    return EXIT_OK if ok else EXIT_PROBLEMS


def _save_pipeline(root: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer: Any = PixArtTransformer2DModel(
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
    )
    transformer.save_pretrained(root / "transformer", max_shard_size="40KB")
    transformer.half().save_pretrained(root / "transformer", variant="fp16", max_shard_size="20KB")
    vae: Any = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    vae.save_pretrained(root / "vae")
    config = T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    T5EncoderModel(config).save_pretrained(root / "text_encoder")
    # The pipeline's own file, as DiffusionPipeline.save_pretrained writes it.
    index = {
        "_class_name": "PixArtAlphaPipeline",
        "transformer": ["diffusers", "PixArtTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "T5EncoderModel"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


def _to_hub_cache(src: Path, cache: Path) -> Path:
    """Lay ``src`` out as huggingface_hub's cache does: blobs named by etag, snapshot links, refs/main."""
    repo = cache / ("models--" + REPO_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        relative = file.relative_to(src)
        data = file.read_bytes()
        if file.name.endswith(_LFS):
            etag = hashlib.sha256(data).hexdigest()
        else:
            etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        shutil.copyfile(file, repo / "blobs" / etag)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("../" * (len(relative.parts) + 1) + f"blobs/{etag}", link)
    return snapshot


def _indent(text: str) -> str:
    return "\n".join("   " + line for line in text.splitlines())
