"""Open an untrusted upload safely: links out of the checkpoint are refused before anything is read.

Builds a tiny safetensors checkpoint in a temp dir whose weights file is a link to a file outside
it, shows that by default the link is followed and listed, then that ``confine=True`` refuses it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file

from ckptkit import UnsafeCheckpointError, resolve_ckpt_dir, verify_checkpoint


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        elsewhere = Path(tmp) / "elsewhere.safetensors"
        save_file({"w": torch.arange(4, dtype=torch.float32)}, elsewhere)
        upload = Path(tmp) / "upload"
        upload.mkdir()
        os.symlink(elsewhere, upload / "model.safetensors")

        report = verify_checkpoint(upload, progress=False)
        print("default: ok =", report.ok, "| links leaving the checkpoint:", len(report.outside_links))
        try:
            resolve_ckpt_dir(upload, confine=True)
        except UnsafeCheckpointError as exc:
            print("confine=True refused it:", exc.detail)
        else:
            raise SystemExit("confine=True should have refused the link")


if __name__ == "__main__":
    main()
