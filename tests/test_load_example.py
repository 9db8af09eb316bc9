"""examples/load_into_model.py runs and reports a model equal to from_pretrained's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_load_into_model_example_runs():
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "load_into_model.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "same outputs as from_pretrained: True" in proc.stdout
    line = next(line for line in proc.stdout.splitlines() if line.startswith("into model: "))
    assert line.startswith("into model: <LoadResult ") and " tensors, " in line
    assert "missing" not in line and "unexpected" not in line  # both lists empty
