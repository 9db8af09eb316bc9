"""Placement benchmark: time-to-first-forward and peak anon RSS with disk offload.

A Llama-architecture checkpoint (~0.8 GiB bf16 with the default 6 layers, 500 MB shards, transformers layout) is loaded
under a CPU budget smaller than its weights, so part of it goes to disk, by

- ckptkit: ``load_with_device_map(..., device_map="auto", max_memory=..., offload_folder=...)``
  (default: CPU weights left as copy-on-write maps of the shards, as transformers leaves them),
  and the same with ``mmap=False`` (CPU weights read into private memory)
- transformers: ``LlamaForCausalLM.from_pretrained(..., device_map="auto", max_memory=...,
  offload_folder=..., dtype=torch.bfloat16)``

and runs one forward pass. Each trial is a fresh process (contenders alternate A B A B ...), hot
cache (``cat`` of the shards first). Reported: median and min/max seconds from after the imports
to the end of the first forward, peak ``RssAnon`` above the post-import baseline, and bytes the
loader wrote into the offload folder.

Run:
    python benchmarks/bench_placement.py [--trials 5] [--layers 6] [--cpu-budget 384MiB]
        [--workdir /tmp/ckptkit-bench-placement] [--write-docs]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SECTION = "## Placement"
CONTENDERS = ("ckptkit", "transformers", "ckptkit-mmap=False")

CONFIG = dict(
    vocab_size=32000,
    hidden_size=2048,
    intermediate_size=5632,
    num_attention_heads=16,
    num_key_value_heads=16,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)


def make_checkpoint(directory: Path, layers: int) -> Path:
    """Random bf16 weights of a Llama architecture, written tensor by tensor (no fp32 model)."""
    import torch
    from accelerate import init_empty_weights
    from huggingface_hub import save_torch_state_dict
    from transformers import LlamaConfig, LlamaForCausalLM

    if (directory / "model.safetensors.index.json").is_file():
        return directory
    config = LlamaConfig(num_hidden_layers=layers, **CONFIG)
    with init_empty_weights():
        model = LlamaForCausalLM(config)
    generator = torch.Generator().manual_seed(0)
    state = {
        name: (torch.randn(p.shape, generator=generator) * 0.02).to(torch.bfloat16)
        for name, p in model.state_dict().items()
    }
    directory.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(directory)
    save_torch_state_dict(state, directory, max_shard_size="500MB")
    return directory


class AnonPeak:
    """Peak ``RssAnon`` and ``RssFile`` (from /proc/self/status), sampled every 2 ms on a thread."""

    def __init__(self) -> None:
        self.baseline, self.file_baseline = self.read()
        self.peak, self.file_peak = self.baseline, self.file_baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> tuple[int, int]:
        found = {}
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(("RssAnon:", "RssFile:")):
                    found[line.split(":")[0]] = int(line.split()[1]) * 1024
        return found.get("RssAnon", 0), found.get("RssFile", 0)

    def _sample(self) -> None:
        anon, mapped = self.read()
        self.peak, self.file_peak = max(self.peak, anon), max(self.file_peak, mapped)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(0.002)

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def trial(contender: str, checkpoint: Path, offload: Path, budget: str) -> dict:
    """One load + first forward, in this (fresh) process."""
    import torch
    from accelerate import init_empty_weights
    from transformers import LlamaConfig, LlamaForCausalLM

    from ckptkit.placement.dispatch import load_with_device_map

    torch.set_num_threads(os.cpu_count() or 1)
    ids = torch.arange(16).reshape(1, 16)
    max_memory = {"cpu": budget}
    with AnonPeak() as memory:
        start = time.perf_counter()
        if contender.startswith("ckptkit"):
            with init_empty_weights():
                model = LlamaForCausalLM(LlamaConfig.from_pretrained(checkpoint))
            model.eval()
            load_with_device_map(
                checkpoint,
                model,
                device_map="auto",
                max_memory=max_memory,
                offload_folder=offload,
                dtype=torch.bfloat16,
                mmap=False if contender == "ckptkit-mmap=False" else None,
            )
        else:
            model = LlamaForCausalLM.from_pretrained(
                checkpoint,
                device_map="auto",
                max_memory=max_memory,
                offload_folder=offload,
                dtype=torch.bfloat16,
            ).eval()
        loaded = time.perf_counter()
        with torch.no_grad():
            logits = model(ids).logits
        float(logits.float().sum())
        end = time.perf_counter()
    device_map = dict(model.hf_device_map)
    written = sum(p.stat().st_size for p in offload.rglob("*") if p.is_file()) if offload.exists() else 0
    return {
        "contender": contender,
        "load_s": loaded - start,
        "first_forward_s": end - start,
        "peak_anon": memory.peak - memory.baseline,
        "peak_file": memory.file_peak - memory.file_baseline,
        "offload_written": written,
        "offload_files": len([p for p in offload.rglob("*") if p.is_file()]) if offload.exists() else 0,
        "disk_entries": sum(1 for d in device_map.values() if d == "disk"),
        "cpu_entries": sum(1 for d in device_map.values() if d == "cpu"),
    }


def hot_cache(checkpoint: Path) -> None:
    for path in sorted(checkpoint.glob("*.safetensors")):
        with open(path, "rb") as handle:
            while handle.read(64 << 20):
                pass


def run(args: argparse.Namespace) -> dict:
    workdir = Path(args.workdir)
    checkpoint = make_checkpoint(workdir / f"llama-{args.layers}L-bf16", args.layers)
    weights = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    results: list[dict] = []
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for index in range(args.trials):
        for contender in CONTENDERS:
            offload = workdir / f"offload-{contender}-{index}"
            shutil.rmtree(offload, ignore_errors=True)
            hot_cache(checkpoint)
            command = [sys.executable, __file__, "--trial", contender, "--checkpoint", str(checkpoint)]
            command += ["--offload", str(offload), "--cpu-budget", args.cpu_budget]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            shutil.rmtree(offload, ignore_errors=True)
            if done.returncode != 0:
                results.append({"contender": contender, "error": done.stderr.strip().splitlines()[-1:]})
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), file=sys.stderr)
    return {"weights_bytes": weights, "checkpoint": str(checkpoint), "trials": results}


def summarize(report: dict, args: argparse.Namespace) -> str:
    import accelerate
    import torch
    import transformers

    import ckptkit

    rows = []
    for contender in CONTENDERS:
        good = [t for t in report["trials"] if t["contender"] == contender and "error" not in t]
        if not good:
            rows.append(f"| {contender} | failed | | | | | |")
            continue
        forward = [t["first_forward_s"] for t in good]
        load = [t["load_s"] for t in good]
        anon = [t["peak_anon"] / 2**20 for t in good]
        mapped = statistics.median(t["peak_file"] / 2**20 for t in good)
        written = statistics.median(t["offload_written"] for t in good)
        files = statistics.median(t["offload_files"] for t in good)
        rows.append(
            f"| {contender} | {statistics.median(forward):.2f} ({min(forward):.2f}-{max(forward):.2f}) "
            f"| {statistics.median(load):.2f} | {statistics.median(anon):.0f} ({min(anon):.0f}-{max(anon):.0f}) "
            f"| {mapped:.0f} "
            f"| {written / 2**10:.0f} KiB in {files:.0f} files | {good[0]['cpu_entries']} cpu / "
            f"{good[0]['disk_entries']} disk |"
        )
    forward = {
        c: statistics.median(
            t["first_forward_s"] for t in report["trials"] if t["contender"] == c and "error" not in t
        )
        for c in CONTENDERS
        if any(t["contender"] == c and "error" not in t for t in report["trials"])
    }
    if "ckptkit" in forward and "transformers" in forward:
        ratio = forward["ckptkit"] / forward["transformers"]
        verdict = "met" if ratio <= 1.0 else "**missed**"
        reading = f"Target: time to first forward <= 1.0x transformers'. This run: {ratio:.2f}x ({verdict})."
    else:
        reading = "Target: time to first forward <= 1.0x transformers'. This run: a contender failed."
    free = subprocess.run(["free", "-g"], capture_output=True, text=True, check=False).stdout.strip()
    lines = [
        SECTION,
        "",
        f"Time to first forward with disk offload: a Llama-architecture checkpoint of "
        f"{report['weights_bytes'] / 2**30:.2f} GiB bf16 ({args.layers} layers, 500 MB shards, written by "
        f'`save_torch_state_dict`) loaded with `device_map="auto"`, `max_memory={{"cpu": "{args.cpu_budget}"}}` '
        "and an `offload_folder`, then one forward of 16 tokens. Fresh process per trial, contenders "
        f"alternating, {args.trials} trials each, hot cache; seconds are median (min-max) from after the "
        "imports; memory is peak `RssAnon` above the post-import baseline, and separately the peak "
        "`RssFile` (pages of mmapped shards: in RAM while touched, but reclaimable).",
        "",
        reading,
        "",
        "| loader | first forward, s | load, s | peak anon, MiB | peak file-backed, MiB "
        "| written to offload_folder | map |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Command: `python benchmarks/bench_placement.py --trials {args.trials} --layers {args.layers} "
        f"--cpu-budget {args.cpu_budget}`",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {platform.machine()}, "
        f"`nproc` = {os.cpu_count()}, load average (1, 5, 15 min) when written: "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} (about 1 is the benchmark itself; "
        "more means other jobs shared the 2 cores, so absolute times are noisy; compare rows of the same run), torch "
        f"{torch.__version__}, transformers {transformers.__version__}, accelerate {accelerate.__version__}, "
        f"ckptkit {ckptkit.__version__}.",
        "",
        "```",
        free,
        "```",
        "",
    ]
    return "\n".join(lines)


def write_docs(section: str) -> Path:
    """Replace (or append) the ``## Placement`` section of docs/benchmarks.md."""
    path = ROOT / "docs" / "benchmarks.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    start = text.find(SECTION + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        following = text.find("\n## ", start + len(SECTION))
        text = (
            text[:start] + section.rstrip("\n") + "\n\n" + (text[following + 1 :] if following >= 0 else "")
        )
    path.write_text(text)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--cpu-budget", default="384MiB")
    parser.add_argument("--workdir", default="/tmp/ckptkit-bench-placement")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the section in docs/benchmarks.md")
    parser.add_argument("--trial", help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--offload", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.trial:
        print(json.dumps(trial(args.trial, Path(args.checkpoint), Path(args.offload), args.cpu_budget)))
        return 0
    report = run(args)
    section = summarize(report, args)
    print(section)
    (Path(args.workdir) / "placement.json").write_text(json.dumps(report, indent=2))
    if args.write_docs:
        print(f"wrote {write_docs(section)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
