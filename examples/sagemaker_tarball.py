"""A SageMaker model.tar.gz from a hub cache snapshot, without the symlinks that break it.

A hub snapshot (``models--org--name/snapshots/<commit>``) is a directory of relative links into
``blobs/``; ``tar czf`` keeps them as links, and the archive is useless once unpacked elsewhere.
``materialize(..., archive="tar.gz")`` follows every link and puts the files at the archive root.

This example builds a tiny real checkpoint with transformers, lays it out as a hub cache does
(blobs named by their sha256, relative links in the snapshot), and archives it.

Run: python examples/sagemaker_tarball.py
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from pathlib import Path

import torch
from transformers import T5Config, T5EncoderModel

from ckptkit import materialize


def fake_hub_cache(model_dir: Path, cache: Path) -> Path:
    """Lay ``model_dir`` out as huggingface_hub's cache does; returns the snapshot directory."""
    commit = "0" * 40
    repo = cache / "models--example--tiny-t5"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    snapshot.mkdir(parents=True)
    for path in sorted(model_dir.iterdir()):
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / path.name).symlink_to(os.path.relpath(blob, snapshot))
    return snapshot


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        config = T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
        T5EncoderModel(config).save_pretrained(root / "model", max_shard_size="20KB")
        snapshot = fake_hub_cache(root / "model", root / "hub")
        print("snapshot entries are links:", all(p.is_symlink() for p in snapshot.iterdir()))

        archive = materialize(snapshot, root / "model.tar.gz", archive="tar.gz")
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            assert all(m.isfile() for m in members), "no links in the archive"
            for member in members:
                print(f"  {member.size:>8}  {member.name}")
            tar.extractall(root / "unpacked", filter="data")
        model = T5EncoderModel.from_pretrained(root / "unpacked")
        print("loads after unpacking:", type(model).__name__, f"{archive.stat().st_size} bytes")


if __name__ == "__main__":
    main()
