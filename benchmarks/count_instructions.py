"""Instructions one dict load executes, counted by callgrind: a reading the VM's noise cannot move.

``python -m benchmarks.count_instructions [--data DIR] [--repeat 2]`` (needs ``valgrind``). Each
contender of the Load section's zero-copy table runs once in a fresh process under
``valgrind --tool=callgrind --instr-atstart=no``: the process imports and sets up as the timed child
does, switches counting on (``callgrind_control -i on``), makes the one call, and switches it off
while the result is still alive. A process that makes no call (``nothing``) measures the switching
itself, which is subtracted. User-space instructions only: the kernel's side of a syscall or a page
fault is not counted, so this reads the Python and torch work per call, not the time.

Not part of ``python -m benchmarks`` (valgrind is not on every machine); docs/benchmarks.md quotes
its output by hand.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.bench_load import DEFAULT_BYTES, DEFAULT_DATA, DEFAULT_SHARD, _dict_contender, _shards
from benchmarks.data import make_realistic_checkpoint
from benchmarks.protocol import warm_cache

CONTENDERS = ["ckptkit", "st_load_file", "st_load_file(dir)"]
_SETTLE_S = 1.0  # callgrind takes a switch when it polls for commands: wait it out


def _switch(on: bool) -> None:
    subprocess.run(["callgrind_control", "-i", "on" if on else "off", str(os.getpid())], capture_output=True)
    time.sleep(_SETTLE_S)


def child(name: str, path: str) -> None:
    fn = (lambda: None) if name == "nothing" else _dict_contender(name, Path(path))
    _switch(True)
    result = fn()
    _switch(False)
    del result


def count(name: str, path: Path) -> int:
    """Instructions counted for one run of ``name`` (the switching included)."""
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "benchmarks.count_instructions",
            "child",
            name,
            str(path),
        ],
        capture_output=True,
        text=True,
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root), "PYTHONHASHSEED": "0"},
        timeout=900,
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"{name}: valgrind failed: {proc.stderr.strip()[-500:]}")
    return int(found.group(1))


def main(argv: list[str] | None = None) -> None:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["child"]:
        child(argv[1], argv[2])
        return
    parser = argparse.ArgumentParser(prog="python -m benchmarks.count_instructions")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeat", type=int, default=2, help="runs of each contender (medians)")
    args = parser.parse_args(argv)
    ckpt = make_realistic_checkpoint(
        args.data / "realistic", total_bytes=DEFAULT_BYTES, shard_size=DEFAULT_SHARD
    )
    warm_cache(_shards(ckpt))
    counts: dict[str, list[int]] = {name: [] for name in ["nothing", *CONTENDERS]}
    for _ in range(args.repeat):
        for name in counts:
            counts[name].append(count(name, ckpt))
    base = statistics.median(counts["nothing"])
    net = {name: statistics.median(counts[name]) - base for name in CONTENDERS}
    print("| contender | instructions (millions) | vs st_load_file | runs |")
    print("|---|---|---|---|")
    for name in CONTENDERS:
        spread = ", ".join(f"{(c - base) / 1e6:.2f}" for c in counts[name])
        print(f"| {name} | {net[name] / 1e6:.2f} | {net[name] / net['st_load_file']:.2f}x | {spread} |")
    print(f"\nthe switching alone: {base / 1e6:.2f}M (subtracted)")


if __name__ == "__main__":
    main()
