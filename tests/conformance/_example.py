"""Run an ``examples/`` script that needs an upstream package, as tests/test_examples.py runs the others."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The same CPU stubs as the conformance tests (tests/conformance/_upstream.py), then the script.
PRELUDE = (
    "import runpy, sys; from tests.conformance._upstream import import_upstream; import_upstream(); "
    "runpy.run_path(sys.argv[1], run_name='__main__')"
)


def run_example(name: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", PRELUDE, str(REPO / "examples" / name)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    assert list(cwd.iterdir()) == [], f"{name} left files in its working directory"
    return result.stdout
