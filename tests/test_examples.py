"""Every ``examples/*.py`` runs to exit 0, and ``examples/quickstart.ipynb`` executes headless."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests._versions import has_diffusers_classes

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


def _diffusers_names(script: Path) -> list[str]:
    """The names an example imports from diffusers (``from diffusers import A, B``)."""
    found = re.findall(r"^\s*from diffusers import \(?([\w, \n]+?)\)?$", script.read_text(), re.MULTILINE)
    return list(dict.fromkeys(n.strip() for names in found for n in names.split(",") if n.strip()))


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs(script: Path, tmp_path: Path) -> None:
    import diffusers

    absent = [name for name in _diffusers_names(script) if not has_diffusers_classes(name)]
    if absent:  # the Wan classes came in diffusers 0.33; `nox -s compat` also runs 0.31
        pytest.skip(
            f"{script.name} needs {', '.join(absent)}, which diffusers {diffusers.__version__} has not"
        )
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
    outputs = _outputs(notebook)
    assert "files match SHA256SUMS" in outputs and "content damaged" in outputs
    assert "fsdp" in outputs
    for kind in ("CheckpointDir", "CheckpointInfo", "LoadResult", "VerifyReport", "MemoryPlan"):
        assert f"<table class='ckptkit'><caption style='text-align:left'><b>{kind} " in outputs, kind
        assert f"<{kind} " in outputs, kind  # the text/plain form beside the table


def test_quickstart_notebook_is_saved_with_its_outputs() -> None:
    import nbformat

    notebook = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(cell.outputs for cell in code), "every code cell shows its output on a code host"
    assert "<table class='ckptkit'>" in _outputs(notebook)


def _outputs(notebook) -> str:
    """Text, plain and HTML outputs of every code cell, joined."""
    parts = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        for output in cell.outputs:
            parts.append(output.get("text", ""))
            data = output.get("data", {})
            parts += [data.get("text/plain", ""), data.get("text/html", "")]
    return "\n".join(parts)
