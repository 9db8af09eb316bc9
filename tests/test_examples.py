"""Every ``examples/*.py`` runs to exit 0, and ``examples/quickstart.ipynb`` executes headless."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Need the upstream packages (ltx-video, wan22): run by tests/conformance/{ltx,wan}/test_example.py
#: in `nox -s conformance`.
UPSTREAM_EXAMPLES = {"migrate_ltx.py", "migrate_wan.py"}
EXAMPLES = sorted(p for p in (REPO / "examples").glob("*.py") if p.name not in UPSTREAM_EXAMPLES)


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"inspect_and_verify.py", "plan_multi_gpu.py"} <= names
    assert (REPO / "examples" / "quickstart.ipynb").is_file()


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{script.name} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{script.name} printed nothing"
    assert list(tmp_path.iterdir()) == [], f"{script.name} left files in its working directory"


def test_quickstart_notebook_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat  # the dev extra: nbformat, nbclient, ipykernel
    from nbclient import NotebookClient

    for key, value in _env().items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    client = NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError naming the cell on any error
    outputs = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    assert "files match SHA256SUMS" in outputs and "content damaged" in outputs
    assert "fsdp" in outputs
