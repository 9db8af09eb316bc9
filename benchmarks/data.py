"""Generated benchmark checkpoints (never downloaded, never committed).

``make_realistic_checkpoint`` writes a bf16 transformer-like checkpoint in the transformers layout
(``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``) with one large
embedding, many 16-128 MiB matrices and hundreds of tiny norms/biases; ``make_tiny_tensors_file``
writes a LoRA-like file of many 32x32 tensors, for per-tensor overhead.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ckptkit.format.sizes import parse_size

__all__ = ["checkpoint_spec", "make_realistic_checkpoint", "make_tiny_tensors_file"]

HIDDEN = 3072
VOCAB = 32128
#: tiny per-layer tensors (norms, biases, modulation rows) so the file has hundreds of them
TINY_PER_LAYER = 40


def checkpoint_spec(total_bytes: int) -> list[tuple[str, tuple[int, ...]]]:
    """(name, shape) of every bf16 tensor of a checkpoint of about ``total_bytes``."""
    spec: list[tuple[str, tuple[int, ...]]] = [("embed_tokens.weight", (VOCAB, HIDDEN))]  # 188 MiB
    spec.append(("proj_out.weight", (16384, HIDDEN + 1024)))  # 128 MiB
    size = sum(2 * a * b for _, (a, b) in spec)
    layer = 0
    while True:
        block: list[tuple[str, tuple[int, ...]]] = []
        for proj in ("q_proj", "k_proj", "v_proj", "o_proj"):  # 18 MiB each
            block.append((f"layers.{layer}.attn.{proj}.weight", (HIDDEN, HIDDEN)))
            block.append((f"layers.{layer}.attn.{proj}.bias", (HIDDEN,)))
        block.append((f"layers.{layer}.mlp.up_proj.weight", (4 * HIDDEN, HIDDEN)))  # 72 MiB
        block.append((f"layers.{layer}.mlp.down_proj.weight", (HIDDEN, 4 * HIDDEN)))
        block.append((f"layers.{layer}.mlp.gate.weight", (HIDDEN // 2, HIDDEN * 2)))  # 18 MiB
        for j in range(TINY_PER_LAYER):
            block.append((f"layers.{layer}.norms.{j}.weight", (HIDDEN,)))
        block_size = sum(2 * torch.Size(shape).numel() for _, shape in block)
        if size + block_size > total_bytes and layer > 0:
            break
        spec.extend(block)
        size += block_size
        layer += 1
    spec.append(("norm.weight", (HIDDEN,)))
    return spec


def make_realistic_checkpoint(
    directory: str | os.PathLike[str], total_bytes: int = 2 * 2**30, shard_size: int | str = "500MB"
) -> Path:
    """Write (once) a bf16 checkpoint of about ``total_bytes`` sharded at ``shard_size``.

    Returns:
        The directory; an existing complete one is reused.

    Example:
        >>> make_realistic_checkpoint("/tmp/bench_ckpt", total_bytes=2**30)  # doctest: +SKIP
    """
    from huggingface_hub import save_torch_state_dict

    directory = Path(directory)
    stamp = directory / ".complete"
    wanted = json.dumps({"total_bytes": total_bytes, "shard_size": str(shard_size)})
    if stamp.exists() and stamp.read_text() == wanted:
        return directory
    if directory.exists():  # another size: shards of the old one must not linger beside the new ones
        for stale in [*directory.glob("*.safetensors"), *directory.glob("*.json"), stamp]:
            stale.unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in checkpoint_spec(total_bytes):
        state[name] = (torch.rand(shape, generator=generator, dtype=torch.float32) - 0.5).to(torch.bfloat16)
    save_torch_state_dict(state, directory, max_shard_size=parse_size(shard_size))
    spec = {name: list(shape) for name, shape in checkpoint_spec(total_bytes)}
    (directory / "spec.json").write_text(json.dumps(spec))
    stamp.write_text(wanted)
    return directory


def make_tiny_tensors_file(path: str | os.PathLike[str], n: int = 5000) -> Path:
    """Write (once) a safetensors file of ``n`` bf16 32x32 tensors (LoRA-like).

    Example:
        >>> make_tiny_tensors_file("/tmp/tiny.safetensors")  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(1)
    tensors = {
        f"lora.{i // 2}.{'down' if i % 2 else 'up'}.weight": torch.rand(32, 32, generator=generator).to(
            torch.bfloat16
        )
        for i in range(n)
    }
    tmp = path.with_suffix(".tmp")
    save_file(tensors, tmp, metadata={"format": "pt"})
    tmp.rename(path)
    return path
