"""inspect_checkpoint and `ckptkit inspect` on every generated layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors import safe_open

from ckptkit import inspect_checkpoint
from tests._subprocess import run_cli, run_python

REPO = Path(__file__).resolve().parents[1]


def _expected_counts(files: list[Path]) -> tuple[int, int]:
    tensors = params = 0
    for path in files:
        with safe_open(path, "pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open is no Mapping
                tensors += 1
                params += handle.get_slice(key).get_shape() and __import__("math").prod(
                    handle.get_slice(key).get_shape()
                )
    return tensors, params


@pytest.mark.parametrize(
    ("name", "selected", "variants", "pattern"),
    [
        (
            "t5_sharded",
            "model.safetensors.index.json (5 shards, safetensors)",
            ["default"],
            "model-*.safetensors",
        ),
        ("t5_single", "model.safetensors", ["default"], "model.safetensors"),
        (
            "t5_variants",
            "model.safetensors.index.json (5 shards, safetensors)",
            ["default", "fp16"],
            "model-*.safetensors",
        ),
        (
            "vae_legacy",
            "diffusion_pytorch_model.safetensors.fp16.index.json (2 shards, safetensors)",
            ["fp16"],
            "*.fp16.safetensors",
        ),
        (
            "pixart",
            "diffusion_pytorch_model.safetensors",
            ["default", "fp16"],
            "diffusion_pytorch_model.safetensors",
        ),
    ],
)
def test_inspect_layouts(layouts, name, selected, variants, pattern) -> None:
    info = inspect_checkpoint(layouts[name])
    assert info.selected == selected
    assert info.variants == variants
    tensors, params = _expected_counts(sorted(layouts[name].glob(pattern)))
    assert (info.tensor_count, info.parameter_count) == (tensors, params)
    assert info.total_bytes == sum(info.bytes_by_dtype.values())
    assert info.ok


def test_inspect_variant_changes_selection(layouts) -> None:
    info = inspect_checkpoint(layouts["t5_variants"], variant="fp16")
    assert info.selected.startswith("model.safetensors.index.fp16.json")
    assert set(info.bytes_by_dtype) == {"F16"}


def test_inspect_pipeline_recurses_into_components(layouts) -> None:
    info = inspect_checkpoint(layouts["pipeline"])
    assert set(info.components) == {"text_encoder", "vae", "transformer", "scheduler"}
    assert info.component_classes["vae"] == ["diffusers", "AutoencoderKL"]
    assert info.components["vae"].variants == ["default", "fp16"]
    assert info.components["transformer"].tensor_count and info.ok
    assert "model_index.json" in {f.name for f in info.files}


def test_inspect_reports_problems_instead_of_raising(layout_copy) -> None:
    directory = layout_copy("t5_sharded")
    shard = next(directory.glob("model-00002-*"))
    shard.unlink()
    (directory / "model-00003-of-00005.safetensors").write_bytes(b"\x08\0\0\0\0\0\0\0{}")
    info = inspect_checkpoint(directory)
    kinds = {p.kind for p in info.problems}
    assert "IncompleteCheckpointError" in kinds and not info.ok
    assert any(shard.name in p.message for p in info.problems)


def test_inspect_links_inside_and_outside(layouts, tmp_path) -> None:
    root = tmp_path / "ckpt"
    root.mkdir()
    (root / "config.json").write_text("{}")
    outside = layouts["t5_single"] / "model.safetensors"
    (root / "model.safetensors").symlink_to(outside)
    (root / "dangling.safetensors").symlink_to(tmp_path / "nowhere")
    info = inspect_checkpoint(root / "model.safetensors")
    by_name = {f.name: f for f in info.files}
    assert by_name["model.safetensors"].outside_root and by_name["model.safetensors"].link_target == str(
        outside
    )
    assert by_name["dangling.safetensors"].size is None
    assert info.selected == "model.safetensors"
    assert any("dangles" in p.message for p in info.problems)


def test_cli_inspect_human_and_json(layouts) -> None:
    human = run_cli("inspect", str(layouts["t5_variants"]))
    assert human.returncode == 0, human.stderr
    assert "* model.safetensors.index.json" in human.stdout and "variants: default, fp16" in human.stdout
    result = run_cli("inspect", str(layouts["pipeline"]), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] is True and data["components"]["vae"]["variants"] == ["default", "fp16"]
    assert data["components"]["transformer"]["parameter_count"] > 0


def test_cli_inspect_exit_codes(layout_copy, tmp_path) -> None:
    directory = layout_copy("t5_sharded")
    next(directory.glob("model-00001-*")).unlink()
    broken = run_cli("inspect", str(directory))
    assert broken.returncode == 1 and "ERROR" in broken.stdout
    missing = run_cli("inspect", str(tmp_path / "absent"))
    assert missing.returncode == 1 and "CheckpointNotFoundError" in missing.stderr
    assert run_cli("inspect").returncode == 2


def test_format_and_inspect_never_import_torch(layouts) -> None:
    code = (
        "import sys, ckptkit, ckptkit.format\n"
        f"ckptkit.inspect_checkpoint({str(layouts['pipeline'])!r})\n"
        "from ckptkit.cli import main\n"
        f"main(['inspect', {str(layouts['t5_sharded'])!r}, '--json'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr


def test_confine_refuses_links_outside_before_reading(layouts, tmp_path, monkeypatch) -> None:
    from ckptkit.errors import UnsafeCheckpointError

    root = tmp_path / "upload"
    root.mkdir()
    (root / "model.safetensors").symlink_to(layouts["t5_single"] / "model.safetensors")
    with pytest.raises(UnsafeCheckpointError, match="outside the checkpoint root"):
        inspect_checkpoint(root, confine=True)
    monkeypatch.setenv("CKPTKIT_CONFINE", "1")
    with pytest.raises(UnsafeCheckpointError):
        inspect_checkpoint(root)
    assert inspect_checkpoint(root, confine=False).ok
