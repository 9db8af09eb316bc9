"""CUDA benchmark: loading a checkpoint straight into GPU memory.

Contenders, each in a fresh process, alternated, hot cache and cold cache, the CUDA context created before the
timed region, ``torch.cuda.synchronize()`` inside it:

- ``ckptkit``: ``load_sharded(dir, device="cuda")`` (pinned, double-buffered staging per reader
  thread: the copy of one chunk runs on the thread's stream while the next chunk is read);
- ``st_load_file(cuda)``: safetensors ``load_file(f, device="cuda")`` per shard;
- ``fastsafetensors``: ``SafeTensorsFileLoader(SingleGroup(), "cuda:0", nogds=True)``;
- ``runai``: Run:ai ``SafetensorsStreamer`` streaming to CPU, each tensor ``.to("cuda")``.

Without a GPU (``torch.cuda.is_available()`` false) nothing runs: ``python -m benchmarks --only
cuda`` says so and keeps the section already in docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from benchmarks.data import make_realistic_checkpoint
from benchmarks.protocol import (
    child_measure,
    drop_cache,
    markdown_table,
    run_alternating,
    summarize,
    warm_cache,
)

TITLE = "CUDA"
DEFAULT_DATA = Path(os.environ.get("CKPTKIT_BENCH_DATA", "/tmp/ckptkit_bench"))
CONTENDERS = ["ckptkit", "st_load_file(cuda)", "fastsafetensors", "runai"]
#: A GPU machine has the room: the full BENCH.md size.
CUDA_BYTES = 2 * 2**30


def unavailable() -> str | None:
    """Why the CUDA benchmark cannot run here, or ``None`` when it can."""
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False)"
    return None


def _contender(name: str, directory: Path) -> Any:
    import torch

    files = sorted(str(p) for p in directory.glob("*.safetensors"))
    device = torch.device("cuda", 0)

    def synced(fn: Any) -> Any:
        def run() -> Any:
            out = fn()
            torch.cuda.synchronize(device)
            return out

        return run

    if name == "ckptkit":
        from ckptkit import load_sharded

        return synced(lambda: load_sharded(directory, device=device, progress=False))
    if name == "st_load_file(cuda)":
        from safetensors.torch import load_file

        return synced(lambda: {k: v for f in files for k, v in load_file(f, device="cuda:0").items()})
    if name == "fastsafetensors":
        from fastsafetensors import SafeTensorsFileLoader, SingleGroup

        def fast() -> Any:
            loader = SafeTensorsFileLoader(SingleGroup(), "cuda:0", nogds=True)
            loader.add_filenames({0: files})
            buffer = loader.copy_files_to_device()
            # clone: the buffer's memory goes back with close(); the clones are what a user keeps
            out = {k: buffer.get_tensor(k).clone() for k in buffer.key_to_rank_lidx}
            buffer.close()
            loader.close()
            return out

        return synced(fast)
    if name == "runai":
        from runai_model_streamer import SafetensorsStreamer

        def runai() -> Any:
            out = {}
            with SafetensorsStreamer() as streamer:
                streamer.stream_files(files)
                for key, tensor in streamer.get_tensors():
                    out[key] = tensor.to(device, non_blocking=False)
            return out

        return synced(runai)
    raise SystemExit(f"unknown contender {name}")


def child(name: str, path: str) -> None:
    import torch

    torch.empty(1, device="cuda")  # the CUDA context, before the baseline
    fn = _contender(name, Path(path))
    measured = child_measure(fn)
    measured["peak_cuda_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(measured))


def _table(ckpt: Path, shards: list[Path], trials: int, *, cold: bool) -> tuple[str, float]:
    # The children keep the PYTHONPATH they were given (where the GPU machine carries its wheels).
    paths = [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
    env = {"PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    prepare = drop_cache if cold else warm_cache
    results = run_alternating(
        {n: [sys.executable, "-m", "benchmarks.bench_cuda", "child", n, str(ckpt)] for n in CONTENDERS},
        trials,
        env,
        before_each=lambda _: prepare(shards),
    )
    rows = summarize(results)
    medians = {r["contender"]: r["median_s"] for r in rows if "median_s" in r}
    best = min((v for k, v in medians.items() if k != "ckptkit"), default=float("nan"))
    ratio = best / medians["ckptkit"] if medians.get("ckptkit") else float("nan")
    return markdown_table(rows), ratio


def run(*, trials: int = 5, data_dir: Path = DEFAULT_DATA) -> str | None:
    """The CUDA section's body, or ``None`` (and a message) when no GPU is available."""
    reason = unavailable()
    if reason is not None:
        print(f"skipping the CUDA benchmark: {reason}; run it on a GPU machine", file=sys.stderr)
        return None
    import torch

    ckpt = make_realistic_checkpoint(data_dir / "realistic_cuda", total_bytes=CUDA_BYTES)
    shards = sorted(ckpt.glob("*.safetensors"))
    size = sum(p.stat().st_size for p in shards)
    hot, hot_ratio = _table(ckpt, shards, trials, cold=False)
    cold, cold_ratio = _table(ckpt, shards, max(3, trials - 2), cold=True)
    gpu = torch.cuda.get_device_name(0)
    versions = ", ".join(f"{name} {_version(name)}" for name in VERSIONED)

    def verdict(ratio: float) -> str:
        return "met" if ratio >= 1.0 else "**missed**"

    return "\n".join(
        [
            f"{size / 2**30:.2f} GiB bf16 in {len(shards)} shards into `cuda:0` ({gpu}, "
            f"{os.cpu_count()} CPU cores); {versions}. Peak anonymous host memory and peak CUDA "
            "memory allocated by torch.",
            "",
            f"- hot cache: ckptkit {hot_ratio:.2f}x as fast as the best of the others "
            f"(target >= 1.0x: {verdict(hot_ratio)}).",
            f"- cold cache (evicted with fsync + POSIX_FADV_DONTNEED before each trial): ckptkit "
            f"{cold_ratio:.2f}x as fast as the best of the others (target >= 1.0x: {verdict(cold_ratio)}).",
            "",
            "Hot cache:",
            "",
            hot,
            "",
            "Cold cache:",
            "",
            cold,
            "",
        ]
    )


VERSIONED = ["torch", "safetensors", "fastsafetensors", "runai-model-streamer"]


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "(not installed)"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] == "child":
        child(args[1], args[2])
        return
    body = run(trials=int(args[0]) if args else 5)
    if body is not None:
        print(body)


if __name__ == "__main__":
    main()
