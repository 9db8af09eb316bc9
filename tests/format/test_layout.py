"""Weight-set discovery and the variant rules, on directories written by the real libraries."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from ckptkit.errors import AmbiguousCheckpointError, CheckpointNotFoundError, VariantNotFoundError
from ckptkit.format.layout import discover_weight_sets, select_weight_set


def _select(directory: Path, **kwargs):
    return select_weight_set(discover_weight_sets(directory), **kwargs)


def test_sets_found_in_each_layout(layouts) -> None:
    found = {
        name: sorted(
            ((s.format, s.variant, s.sharded) for s in discover_weight_sets(d)),
            key=lambda t: (t[1] is not None, str(t)),
        )
        for name, d in layouts.items()
        if name != "pipeline"
    }
    assert found["t5_sharded"] == [("safetensors", None, True)]
    assert found["t5_single"] == [("safetensors", None, False)]
    assert found["t5_variants"] == [("safetensors", None, True), ("safetensors", "fp16", True)]
    assert found["t5_bin"] == [("torch", None, False)]
    assert found["vae_legacy"] == [("safetensors", "fp16", True)]
    assert found["pixart"] == [("safetensors", None, False), ("safetensors", "fp16", False)]


def test_legacy_scheme_is_recognised(layouts) -> None:
    (legacy,) = discover_weight_sets(layouts["vae_legacy"])
    assert legacy.scheme == "legacy"
    assert legacy.index_file is not None and legacy.index_file.name.endswith(".fp16.index.json")
    assert legacy.complete and len(legacy.files) == 2


def test_requested_variant_present(layouts) -> None:
    selection = _select(layouts["t5_variants"], variant="fp16")
    assert selection.weight_set.variant == "fp16" and selection.warning is None


@pytest.mark.parametrize("policy", ["warn", "allow"])
def test_variant_missing_falls_back_to_default(layouts, policy) -> None:
    selection = _select(layouts["t5_sharded"], variant="fp16", variant_fallback=policy)
    assert selection.weight_set.variant is None
    assert selection.cast_dtype == "float16"
    assert (selection.warning is not None) == (policy == "warn")
    if selection.warning:
        assert "fp16" in selection.warning and "variant_fallback" in selection.warning


def test_variant_missing_under_error_policy(layouts) -> None:
    with pytest.raises(VariantNotFoundError, match="default") as info:
        _select(layouts["t5_sharded"], variant="fp16", variant_fallback="error")
    assert str(layouts["t5_sharded"]) in str(info.value)


@pytest.mark.parametrize("name", ["t5_fp16_only", "vae_legacy"])
def test_no_default_one_variant_is_used_with_warning(layouts, name) -> None:
    selection = _select(layouts[name])
    assert selection.weight_set.variant == "fp16" and "fp16" in (selection.warning or "")


def test_no_default_several_variants_is_ambiguous(layout_copy) -> None:
    directory = layout_copy("pixart")
    (directory / "diffusion_pytorch_model.safetensors").rename(
        directory / "diffusion_pytorch_model.bf16.safetensors"
    )
    with pytest.raises(VariantNotFoundError, match="variant='bf16' or variant='fp16'"):
        _select(directory)


def test_variant_absent_everywhere(layouts) -> None:
    with pytest.raises(VariantNotFoundError, match="fp16"):
        _select(layouts["t5_fp16_only"], variant="bf16")


def test_safetensors_preferred_over_torch(layout_copy, layouts) -> None:
    directory = layout_copy("t5_bin")
    shutil.copy(layouts["t5_single"] / "model.safetensors", directory)
    assert _select(directory).weight_set.format == "safetensors"


def test_stale_index_beside_newer_single_file(layout_copy, layouts) -> None:
    directory = layout_copy("t5_sharded")
    old = time.time() - 3600
    for path in directory.iterdir():
        os.utime(path, (old, old))
    shutil.copy(layouts["t5_single"] / "model.safetensors", directory)
    assert _select(directory).weight_set.files == [directory / "model.safetensors"]


def test_missing_shard_loses_to_complete_set(layout_copy) -> None:
    directory = layout_copy("t5_variants")
    next(directory.glob("model-00002-*.safetensors")).unlink()
    sets = discover_weight_sets(directory)
    default = next(s for s in sets if s.variant is None)
    assert not default.complete and default.missing[0].name.startswith("model-00002")


def test_unindexed_shards_form_a_set(layout_copy) -> None:
    directory = layout_copy("t5_sharded")
    (directory / "model.safetensors.index.json").unlink()
    (weight_set,) = discover_weight_sets(directory)
    assert weight_set.index_file is None and len(weight_set.files) == 5 and weight_set.complete
    next(directory.glob("model-00003-*.safetensors")).unlink()
    (weight_set,) = discover_weight_sets(directory)
    assert [p.name for p in weight_set.missing] == ["model-00003-of-00005.safetensors"]


def test_known_name_wins_over_unrelated_files_and_unknown_names_are_ambiguous(layout_copy, tmp_path) -> None:
    directory = layout_copy("pixart")
    (directory / "Wan2.1_VAE.pth").write_bytes(b"x")
    assert _select(directory).weight_set.name == "diffusion_pytorch_model"
    other = tmp_path / "loose"
    other.mkdir()
    (other / "a.safetensors").write_bytes(b"x")
    (other / "b.safetensors").write_bytes(b"x")
    with pytest.raises(AmbiguousCheckpointError, match=r"a\.safetensors"):
        _select(other)


def test_nothing_to_select(tmp_path) -> None:
    with pytest.raises(CheckpointNotFoundError):
        select_weight_set([], where=tmp_path)
    with pytest.raises(ValueError, match="variant_fallback"):
        select_weight_set([], variant_fallback="maybe")
