"""Is this directory a pipeline? One answer (``pipeline_components``), whichever verb asks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ckptkit import (
    IncompleteCheckpointError,
    inspect_checkpoint,
    load_sharded,
    resave,
    resolve_ckpt_dir,
    verify_checkpoint,
)
from ckptkit.adapters import load_vae
from ckptkit.format.components import pipeline_components, read_model_index


def _model(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    save_file({"w": torch.arange(4.0)}, root / "model.safetensors")
    (root / "config.json").write_text('{"model_type": "t"}')
    return root


def test_the_rule(tmp_path: Path) -> None:
    plain = _model(tmp_path / "plain")
    assert pipeline_components(plain) is None
    (plain / "model_index.json").write_text(
        '{"_class_name": "P", "vae": ["diffusers", "AutoencoderKL"], "x": 1}'
    )
    assert [(c.name, c.class_name) for c in pipeline_components(plain) or []] == [("vae", "AutoencoderKL")]
    assert read_model_index is pipeline_components  # the old name, for the deprecated import path


def test_a_dangling_model_index_is_the_same_error_through_every_verb(tmp_path: Path) -> None:
    # Weights at the root and a model_index.json whose target is gone (a cleaned hub blob): not a
    # plain model that happens to have a broken file, but a pipeline whose index is missing.
    root = _model(tmp_path / "ckpt")
    (root / "model_index.json").symlink_to(tmp_path / "gone.json")
    for call in (
        lambda: resolve_ckpt_dir(root),
        lambda: load_sharded(root, progress=False),
        lambda: resave(root, tmp_path / "out", progress=False),
    ):
        with pytest.raises(IncompleteCheckpointError, match=r"model_index\.json"):
            call()
    assert not (tmp_path / "out").exists()
    for report in (inspect_checkpoint(root), verify_checkpoint(root, progress=False)):
        assert not report.ok
        assert any(
            p.kind == "IncompleteCheckpointError" and "model_index.json" in p.message for p in report.problems
        ), report.problems


def test_an_index_naming_no_component_here_leaves_the_root_model_for_every_verb(layout_copy) -> None:
    # A single-file VAE that carries a pipeline's model_index.json, none of whose folders came along.
    directory = layout_copy("vae_variants")
    index = {"_class_name": "P", "vae": ["diffusers", "AutoencoderKL"], "unet": ["diffusers", "U"]}
    (directory / "model_index.json").write_text(json.dumps(index))
    ckpt = resolve_ckpt_dir(directory)
    assert not ckpt.components and ckpt.path == directory
    info = inspect_checkpoint(directory)
    assert not info.components and info.selected is not None
    vae = load_vae(directory)  # before: the adapter judged this by config.json, resolve by the index
    expected = load_sharded(ckpt)
    assert all(torch.equal(v, expected[k]) for k, v in vae.state_dict().items())
