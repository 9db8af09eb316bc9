"""Generated benchmark checkpoints (never downloaded, never committed).

(Minimal version written for the resave benchmark; the shared one keeps this name and signature.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["make_realistic_checkpoint"]

HIDDEN = 3072
VOCAB = 32128


def _spec(total_bytes: int) -> list[tuple[str, tuple[int, ...]]]:
    """A transformer-like mix: one large embedding, 18-72 MiB matrices, hundreds of tiny norms."""
    spec: list[tuple[str, tuple[int, ...]]] = [("embed_tokens.weight", (VOCAB, HIDDEN))]
    size, layer = 2 * VOCAB * HIDDEN, 0
    while True:
        block = [(f"layers.{layer}.attn.{p}.weight", (HIDDEN, HIDDEN)) for p in ("q", "k", "v", "o")]
        block += [(f"layers.{layer}.attn.{p}.bias", (HIDDEN,)) for p in ("q", "k", "v", "o")]
        block += [(f"layers.{layer}.mlp.up.weight", (4 * HIDDEN, HIDDEN))]
        block += [(f"layers.{layer}.mlp.down.weight", (HIDDEN, 4 * HIDDEN))]
        block += [(f"layers.{layer}.norms.{j}.weight", (HIDDEN,)) for j in range(40)]
        block_size = sum(2 * _numel(shape) for _, shape in block)
        if size + block_size > total_bytes and layer > 0:
            break
        spec += block
        size += block_size
        layer += 1
    return [*spec, ("norm.weight", (HIDDEN,))]


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def make_realistic_checkpoint(
    directory: str | os.PathLike[str], total_bytes: int = 2 * 2**30, shard_size: int | str = "500MB"
) -> Path:
    """Write (once) a bf16 checkpoint of about ``total_bytes`` in the transformers layout.

    Shards are generated and written one at a time (``model-0000i-of-0000n.safetensors`` plus
    ``model.safetensors.index.json``), so generating needs about one shard of memory.

    Returns:
        The directory; a complete one from an earlier run with the same arguments is reused.

    Example:
        >>> make_realistic_checkpoint("benchmarks/data/realistic", total_bytes=2**30)  # doctest: +SKIP
    """
    import torch
    from safetensors.torch import save_file

    from ckptkit.format.sizes import parse_size

    directory = Path(directory)
    stamp = directory / ".complete"
    wanted = json.dumps({"total_bytes": total_bytes, "shard_size": str(shard_size)})
    if stamp.exists() and stamp.read_text() == wanted:
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("model*"):
        old.unlink()
    limit = parse_size(shard_size)
    groups: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    used = 0
    for name, shape in _spec(total_bytes):
        nbytes = 2 * _numel(shape)
        if groups[-1] and used + nbytes > limit:
            groups.append([])
            used = 0
        groups[-1].append((name, shape))
        used += nbytes
    generator = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    for i, group in enumerate(groups):
        filename = f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors"
        shard = {n: (torch.rand(s, generator=generator) - 0.5).to(torch.bfloat16) for n, s in group}
        save_file(shard, directory / filename, metadata={"format": "pt"})
        total += sum(t.numel() * 2 for t in shard.values())
        weight_map.update(dict.fromkeys(shard, filename))
        del shard
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    (directory / "config.json").write_text(json.dumps({"model_type": "synthetic", "hidden_size": HIDDEN}))
    stamp.write_text(wanted)
    return directory
