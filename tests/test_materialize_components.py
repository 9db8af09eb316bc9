"""``materialize(components=)`` asks the one pipeline rule ``resave(components=)`` asks.

Which names are components, what is refused and with which error, and what travels beside the
chosen folders are decided once (:func:`ckptkit.format.components.select_components`); the two verbs
must answer the same for the same input, the tricky ones included.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ckptkit import CheckpointNotFoundError, CkptError, IncompleteCheckpointError, materialize, resave

INDEX = {
    "_class_name": "StableDiffusionXLPipeline",
    "scheduler": ["diffusers", "EulerDiscreteScheduler"],
    "unet": ["diffusers", "UNet2DConditionModel"],
    "vae": ["diffusers", "AutoencoderKL"],
    "../escape": ["diffusers", "AutoencoderKL"],  # never a path: not a component
}


def _pipeline(root: Path) -> Path:
    """SDXL-shaped: two components with weights, a scheduler, a single file and a README at the root."""
    for name, size in (("unet", 6), ("vae", 4)):
        (root / name).mkdir(parents=True)
        save_file({"w": torch.arange(float(size))}, root / name / "diffusion_pytorch_model.safetensors")
        (root / name / "config.json").write_text(json.dumps({"_class_name": INDEX[name][1]}))
    (root / "scheduler").mkdir()
    (root / "scheduler" / "scheduler_config.json").write_text('{"_class_name": "EulerDiscreteScheduler"}')
    (root / "model_index.json").write_text(json.dumps(INDEX))
    save_file({"first_stage_model.w": torch.arange(4.0)}, root / "sd_xl_base_1.0.safetensors")
    (root / "README.md").write_text("tiny SDXL-shaped pipeline\n")
    return root


def _files(directory: Path) -> set[str]:
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


@pytest.mark.parametrize("components", [["vae"], ["unet", "vae"], "unet"])
def test_the_same_files_as_resave_and_never_the_root_single_file(tmp_path, components):
    src = _pipeline(tmp_path / "src")
    copied = materialize(src, tmp_path / "copy", components=components, manifest=False, progress=False)
    rewritten = resave(src, tmp_path / "resaved", components=components, progress=False)

    chosen = [components] if isinstance(components, str) else components
    expected = {"model_index.json", "README.md"} | {
        f"{c}/{f}" for c in chosen for f in ("config.json", "diffusion_pytorch_model.safetensors")
    }
    assert _files(copied) == _files(rewritten.path) == expected
    # SDXL's single file is one more weight set, not a top-level file of the chosen components.
    assert not (copied / "sd_xl_base_1.0.safetensors").exists()


def _same_error(src: Path, tmp_path: Path, components: list[str]) -> CkptError:
    with pytest.raises(CkptError) as by_materialize:
        materialize(src, tmp_path / "m", components=components, progress=False)
    with pytest.raises(CkptError) as by_resave:
        resave(src, tmp_path / "r", components=components, progress=False)
    assert type(by_materialize.value) is type(by_resave.value)
    assert str(by_materialize.value) == str(by_resave.value)
    assert not (tmp_path / "m").exists() and not (tmp_path / "r").exists()
    return by_materialize.value


@pytest.mark.parametrize("name", ["text_encoder", "../escape", "sd_xl_base_1.0"])
def test_an_unknown_component_is_the_same_typed_error_naming_the_valid_ones(tmp_path, name):
    src = _pipeline(tmp_path / "src")
    error = _same_error(src, tmp_path, [name])
    assert isinstance(error, CheckpointNotFoundError)
    assert "not a component of this pipeline" in str(error)
    assert "scheduler, unet, vae" in str(error)  # the fix names the valid ones, and only those


def test_a_dangling_model_index_is_the_same_error(tmp_path):
    src = _pipeline(tmp_path / "src")
    (src / "model_index.json").unlink()
    (src / "model_index.json").symlink_to(tmp_path / "gone.json")
    error = _same_error(src, tmp_path, ["vae"])
    assert isinstance(error, IncompleteCheckpointError) and "model_index.json" in str(error)


def test_folders_without_a_model_index_are_not_components(tmp_path):
    src = _pipeline(tmp_path / "src")
    (src / "model_index.json").unlink()
    error = _same_error(src, tmp_path, ["vae"])
    assert isinstance(error, CheckpointNotFoundError) and "not a pipeline" in str(error)


def test_a_component_named_but_not_here_is_the_same_error(tmp_path):
    src = _pipeline(tmp_path / "src")
    (src / "model_index.json").write_text(json.dumps({**INDEX, "text_encoder": ["transformers", "T5"]}))
    error = _same_error(src, tmp_path, ["vae", "text_encoder"])
    assert isinstance(error, IncompleteCheckpointError) and "text_encoder" in str(error)


def _linked_siblings(root: Path) -> Path:
    """SDXL repos link ``tokenizer_2`` to ``tokenizer`` (and may ``text_encoder_2`` to ``text_encoder``):
    each is a component of its own."""
    src = _pipeline(root)
    index = {**INDEX}
    for name, cls in (("tokenizer", "CLIPTokenizer"), ("text_encoder", "CLIPTextModel")):
        index[name] = index[f"{name}_2"] = ["transformers", cls]
        (src / name).mkdir()
        (src / name / "config.json").write_text(json.dumps({"architectures": [cls]}))
        (src / f"{name}_2").symlink_to(name, target_is_directory=True)
    (src / "tokenizer" / "vocab.json").write_text('{"a": 0}')
    save_file({"w": torch.arange(3.0)}, src / "text_encoder" / "model.safetensors")
    (src / "model_index.json").write_text(json.dumps(index))
    return src


def test_a_component_linked_to_a_sibling_folder_is_copied_as_real_files(tmp_path):
    src = _linked_siblings(tmp_path / "src")
    vae = {f"vae/{f}" for f in ("config.json", "diffusion_pytorch_model.safetensors")}
    tokenizer_2 = {"tokenizer_2/vocab.json", "tokenizer_2/config.json"}
    text_encoder_2 = {"text_encoder_2/model.safetensors", "text_encoder_2/config.json"}
    top = {"model_index.json", "README.md"}

    copied = materialize(
        src, tmp_path / "copy", components=["tokenizer_2", "vae"], manifest=False, progress=False
    )
    assert _files(copied) == top | tokenizer_2 | vae
    assert (copied / "tokenizer_2" / "vocab.json").read_text() == '{"a": 0}'
    # resave rewrites weights: the same rule for a linked component holding some.
    components = ["text_encoder_2", "vae"]
    copied = materialize(src, tmp_path / "copy2", components=components, manifest=False, progress=False)
    rewritten = resave(src, tmp_path / "resaved", components=components, progress=False)
    assert _files(copied) == _files(rewritten.path) == top | text_encoder_2 | vae
    # Both names, when both are asked for: the link is walked under its own name too.
    both = materialize(
        src, tmp_path / "both", components=["tokenizer", "tokenizer_2"], manifest=False, progress=False
    )
    assert {"tokenizer/vocab.json", "tokenizer_2/vocab.json"} <= _files(both)
    for out in (tmp_path / "copy", copied, rewritten.path, both):  # a materialized tree has no links
        assert not any(p.is_symlink() for p in out.rglob("*"))


def test_a_link_cycle_in_the_source_is_walked_once(tmp_path):
    src = _pipeline(tmp_path / "src")
    (src / "vae" / "loop").symlink_to("..", target_is_directory=True)
    copied = materialize(src, tmp_path / "copy", components=["vae"], manifest=False, progress=False)
    assert "vae/config.json" in _files(copied) and not (copied / "vae" / "loop" / "vae").exists()
