"""A hostile-size header: 1e6 tiny tensors (~68 MB of JSON). ckptkit's header parser against
safetensors' own (``safe_open`` + listing the keys), and ckptkit's ``inspect``, in fresh processes.

The bound promised in docs/guarantees.md: ckptkit parses such a header in about the time
safetensors' parser takes (within ~2x), with memory of the same order.

Run from the repo root: PYTHONPATH=. python benchmarks/bench_hostile_header.py [--tensors 1000000] [--trials 3]
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import tempfile
from pathlib import Path

from benchmarks.protocol import machine_info, markdown_table, run_alternating, summarize

CHILD = {
    "ckptkit read_header": (
        "from ckptkit.format.safetensors_header import read_header\n"
        "result = lambda: len(read_header(PATH).tensors)\n"
    ),
    "safetensors safe_open + keys": (
        "from safetensors import safe_open\n"
        "def result():\n"
        "    with safe_open(PATH, 'np') as f:\n"
        "        return len(list(f.keys()))\n"
    ),
    "ckptkit inspect_checkpoint": (
        "from ckptkit import inspect_checkpoint\n"
        "result = lambda: inspect_checkpoint(Path(PATH).parent).tensor_count\n"
    ),
}


def write_file(path: Path, count: int) -> None:
    entries = {f"t{i}": {"dtype": "U8", "shape": [1], "data_offsets": [i, i + 1]} for i in range(count)}
    header = json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(header)))
        handle.write(header)
        handle.write(b"\0" * count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt" / "model.safetensors"
        path.parent.mkdir()
        write_file(path, args.tensors)
        contenders = {}
        for name, body in CHILD.items():
            code = (
                "import json, sys\nfrom pathlib import Path\n"
                "from benchmarks.protocol import child_measure\n"
                f"PATH = {str(path)!r}\n{body}"
                "print(json.dumps(child_measure(result)))\n"
            )
            contenders[name] = [sys.executable, "-c", code]
        rows = summarize(run_alternating(contenders, trials=args.trials))
    print(f"{args.tensors} tensors, {args.trials} fresh-process trials each, alternated\n")
    print(markdown_table(rows))
    print()
    print(machine_info())


if __name__ == "__main__":
    main()
