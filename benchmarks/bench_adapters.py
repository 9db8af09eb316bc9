"""ADAPTERS benchmark: ``ckptkit.adapters.load_t5/load_vae/load_dit`` vs the ``from_pretrained`` they replace.

Three generated models written with the libraries' own ``save_pretrained`` (float32, one
safetensors file each): a T5 encoder of ~750 MB (d_model 1024, 12 layers), the Stable Diffusion
``AutoencoderKL`` (~335 MB) and a 6-layer PixArt DiT (~520 MB). Each is loaded in the stored dtype
and with a bf16 cast, by the adapter and by ``from_pretrained``, alternating in fresh processes,
hot cache. Timed: the load call alone (imports and nothing else before it); memory: peak
``RssAnon`` above the post-import baseline.

Run with ``python -m benchmarks --only adapters``; one child is
``python -m benchmarks.bench_adapters child MODEL DTYPE LOADER DIR``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks.protocol import child_measure, markdown_table, run_alternating, summarize, warm_cache

TITLE = "Adapters"
DEFAULT_DATA = Path(os.environ.get("CKPTKIT_BENCH_DATA", "/tmp/ckptkit_bench"))
MODELS = ("t5", "vae", "dit")
DTYPES = ("stored", "bf16")
LOADERS = ("ckptkit", "from_pretrained")


def _make(model: str, directory: Path) -> None:
    """Write one generated model with its library's ``save_pretrained`` (in a child process)."""
    import torch

    torch.manual_seed(0)
    if model == "t5":
        from transformers import T5Config, T5EncoderModel

        config = T5Config(
            vocab_size=32128,
            d_model=1024,
            d_kv=64,
            d_ff=2816,
            num_layers=12,
            num_heads=16,
            feed_forward_proj="gated-gelu",
        )
        built: Any = T5EncoderModel(config)
    elif model == "vae":
        from diffusers import AutoencoderKL

        built = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
        )
    else:
        from diffusers import PixArtTransformer2DModel

        built = PixArtTransformer2DModel(
            num_attention_heads=16,
            attention_head_dim=72,
            in_channels=4,
            out_channels=8,
            num_layers=6,
            cross_attention_dim=1152,
            caption_channels=4096,
            sample_size=64,
            patch_size=2,
            norm_type="ada_norm_single",
            use_additional_conditions=False,
        )
    built.save_pretrained(directory)


def _model_dir(data_dir: Path, model: str) -> Path:
    directory = data_dir / f"adapter_{model}"
    if not any(directory.glob("*.safetensors")):
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        subprocess.run(
            [sys.executable, "-m", "benchmarks.bench_adapters", "make", model, str(directory)],
            check=True,
            env=env,
        )
    return directory


def _loader(model: str, dtype: str, loader: str, directory: Path) -> Any:
    import torch

    kwargs: dict[str, Any] = {} if dtype == "stored" else {"torch_dtype": torch.bfloat16}
    # The same imports before the timed call for both loaders: the library, its model class, ckptkit.
    import diffusers  # noqa: F401
    import transformers  # noqa: F401
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import T5EncoderModel

    import ckptkit.adapters  # noqa: F401
    from ckptkit.load import sharded  # noqa: F401
    from ckptkit.placement import dispatch  # noqa: F401

    if loader == "ckptkit":
        from ckptkit import adapters

        function = {"t5": adapters.load_t5, "vae": adapters.load_vae, "dit": adapters.load_dit}[model]
        return lambda: function(directory, **kwargs)
    if model == "t5":
        from transformers import T5EncoderModel

        library = {} if dtype == "stored" else {"dtype": torch.bfloat16}
        return lambda: T5EncoderModel.from_pretrained(directory, **library)
    if model == "vae":
        from diffusers import AutoencoderKL

        return lambda: AutoencoderKL.from_pretrained(directory, **kwargs)

    return lambda: PixArtTransformer2DModel.from_pretrained(directory, **kwargs)


def child(model: str, dtype: str, loader: str, path: str) -> None:
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    import logging

    logging.disable(logging.WARNING)
    fn = _loader(model, dtype, loader, Path(path))
    print(json.dumps(child_measure(fn)))


def _mark(ok: bool) -> str:
    return "met" if ok else "**missed**"


def run(*, trials: int = 5, data_dir: Path = DEFAULT_DATA) -> str:
    """Run the adapter benchmark; returns the markdown body of its section."""
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    rows: list[dict[str, Any]] = []
    readings: list[str] = []
    raw: dict[str, Any] = {}
    for model in MODELS:
        directory = _model_dir(data_dir, model)
        size = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
        for dtype in DTYPES:
            contenders = {
                f"{model} {dtype} {loader}": [
                    sys.executable,
                    "-m",
                    "benchmarks.bench_adapters",
                    "child",
                    model,
                    dtype,
                    loader,
                    str(directory),
                ]
                for loader in LOADERS
            }
            results = run_alternating(
                contenders, trials, env, before_each=lambda _, d=directory: warm_cache([d])
            )
            raw[f"{model} {dtype}"] = results
            summary = summarize(results)
            by_name = {r["contender"]: r for r in summary}
            ours, theirs = by_name[f"{model} {dtype} ckptkit"], by_name[f"{model} {dtype} from_pretrained"]
            for row in summary:
                row["file MiB"] = size / 2**20
                rows.append(row)
            if "median_s" in ours and "median_s" in theirs:
                ratio = ours["median_s"] / theirs["median_s"]
                extra = (ours["median_anon_bytes"] - theirs["median_anon_bytes"]) / 2**20
                readings.append(
                    f"- {model}, {dtype}: {ratio:.2f}x the time of `from_pretrained` (target <= 1.0x: "
                    f"{_mark(ratio <= 1.0)}); peak anonymous memory {extra:+.0f} MiB beside it "
                    f"(target <= +64 MiB: {_mark(extra <= 64)})."
                )
            else:
                readings.append(
                    f"- {model}, {dtype}: a contender failed ({ours.get('errors') or theirs.get('errors')})."
                )
    (data_dir / "adapters_results.json").write_text(json.dumps(raw, indent=1))
    for row in rows:
        for key in ("median_anon_bytes", "max_anon_bytes"):
            if key in row:
                row[key.replace("_bytes", "_MiB")] = row.pop(key) / 2**20
    return "\n".join(
        [
            "Generated float32 models written by `save_pretrained`: T5 encoder (d_model 1024, 12 layers), "
            "Stable Diffusion `AutoencoderKL`, PixArt DiT (6 layers). `stored`: no dtype argument (both "
            "leave the weights as copy-on-write views of the file); `bf16`: `torch_dtype=torch.bfloat16` "
            "(`dtype=` for transformers), so both read and cast into private memory. Timed: the load "
            "call alone, hot cache, fresh process per trial, alternated.",
            "",
            "### Targets (this run, medians)",
            "",
            *readings,
            "",
            "How each side reads: in the stored dtype both leave the weights as views of the file's map "
            "(nothing read until used). With a cast, ckptkit casts every tensor straight from a "
            "copy-on-write map of the file into fresh memory, in 16 MiB chunks on the calling thread, "
            "each split by torch over its intra-op threads (each byte of the file read once, by the "
            "cast; no staging buffer), and `from_pretrained` casts "
            "tensor by tensor from safetensors' map: both pay the first-touch faults of the bf16 "
            "destination, which is the peak anonymous memory on both sides. The rest of "
            "`from_pretrained`'s time is Python around the tensors (in a profile of its T5 load, about a "
            "third goes to compiling the regular expressions of its key-renaming rules).",
            "",
            markdown_table(rows),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "child":
        child(*args[1:5])
        return
    if args and args[0] == "make":
        _make(args[1], Path(args[2]))
        return
    print(run(trials=int(args[0]) if args else 5))


if __name__ == "__main__":
    main()
