"""The air-gapped workflow: record SHA256SUMS where the download is trusted, verify the copy elsewhere.

Builds a tiny sharded T5 encoder with transformers' ``save_pretrained`` (the "download"), writes a
manifest with ``verify_checkpoint(..., write_manifest=True)``, copies the directory (the transfer to
the cluster), verifies the copy against the manifest, then cuts one shard short — as an interrupted
copy would — and shows that ``verify`` names it. Offline throughout.

Run: ``python examples/air_gapped_copy.py``
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import T5Config, T5EncoderModel

from ckptkit import verify_checkpoint


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        download = Path(tmp) / "download" / "text_encoder"
        torch.manual_seed(0)
        config = T5Config(
            vocab_size=99, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
            relative_attention_num_buckets=8, decoder_start_token_id=0,
        )  # fmt: skip
        T5EncoderModel(config).save_pretrained(download, max_shard_size="20KB")

        trusted = verify_checkpoint(download, write_manifest=True, progress=False)
        print(f"download: ok={trusted.ok}, manifest written: {Path(trusted.manifest_written or '').name}")

        cluster = Path(tmp) / "cluster" / "text_encoder"
        shutil.copytree(download, cluster)
        copied = verify_checkpoint(cluster, progress=False)
        print(
            f"cluster copy: ok={copied.ok}, {len(copied.verified)} of {len(copied.files)} files match SHA256SUMS"
        )
        assert copied.ok and len(copied.verified) == len(copied.files)

        shard = sorted(cluster.glob("model-*.safetensors"))[-1]
        os.truncate(shard, shard.stat().st_size // 2)  # an interrupted transfer
        broken = verify_checkpoint(cluster, progress=False)
        assert not broken.ok
        print(f"after an interrupted copy: ok={broken.ok}")
        for problem in broken.problems:
            print(f"  {problem.kind}: {Path(problem.path or '').name}")


if __name__ == "__main__":
    main()
