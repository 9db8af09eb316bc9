"""resave against the real libraries: what it writes loads in transformers/diffusers and gives the
same outputs as the original; tensors equal what safetensors/torch read from the source."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from ckptkit import resave
from ckptkit.format import read_header, read_index
from tests._versions import dtype_kwarg

T5_INPUT = torch.tensor([[5, 17, 3, 42, 8, 1]])


def checksums(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (links followed), by relative path."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def safetensors_state(directory: Path, pattern: str = "*.safetensors") -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob(pattern)):
        for key, value in load_file(path).items():
            assert key not in state
            state[key] = value
    return state


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key


def t5_output(path: Path, **kwargs) -> torch.Tensor:
    from transformers import T5EncoderModel

    model = T5EncoderModel.from_pretrained(path, **kwargs).eval()
    with torch.no_grad():
        return model(T5_INPUT).last_hidden_state


def vae_output(path: Path, **kwargs) -> torch.Tensor:
    from diffusers import AutoencoderKL

    model = AutoencoderKL.from_pretrained(path, **kwargs).eval()
    with torch.no_grad():
        return model(torch.linspace(-1, 1, 3 * 16 * 16).reshape(1, 3, 16, 16)).sample


def pixart_output(path: Path, **kwargs) -> torch.Tensor:
    from diffusers import PixArtTransformer2DModel

    model = PixArtTransformer2DModel.from_pretrained(path, **kwargs).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        return model(
            torch.randn(1, 4, 8, 8, generator=generator),
            encoder_hidden_states=torch.randn(1, 5, 32, generator=generator),
            timestep=torch.tensor([10]),
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        ).sample


def check_shards(directory: Path, limit: int | None, name: str, variant: str | None = None) -> list[Path]:
    """The set is named and indexed as transformers/diffusers write it; returns its shard paths."""
    tag = f".{variant}" if variant else ""
    shards = sorted(
        p for p in directory.iterdir() if p.name.startswith(f"{name}{tag}") and p.suffix == ".safetensors"
    )
    index_name = f"{name}.safetensors.index{tag}.json"
    if len(shards) == 1:
        assert shards[0].name == f"{name}{tag}.safetensors"
        assert not (directory / index_name).exists()
    else:
        assert [p.name for p in shards] == [
            f"{name}{tag}-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)
        ]
        raw = (directory / index_name).read_text()
        index = json.loads(raw)
        assert raw == json.dumps(index, indent=2, sort_keys=True) + "\n"
        assert list(index["weight_map"]) == sorted(index["weight_map"])
        headers = [read_header(p) for p in shards]
        assert index["metadata"]["total_size"] == sum(t.nbytes for h in headers for t in h.tensors.values())
        assert read_index(directory / index_name).shard_names == [p.name for p in shards]
    for path in shards:
        header = read_header(path)
        assert header.metadata == {"format": "pt"}
        assert header.data_start % 8 == 0
        size = sum(t.nbytes for t in header.tensors.values())
        if limit is not None and size > limit:
            assert len(header.tensors) == 1, "only a lone oversize tensor may exceed the limit"
    return shards


@pytest.mark.parametrize("max_shard_size", [None, "20KB", 50_000, 1])
def test_transformers_t5_resharded_loads_with_identical_outputs(layouts, tmp_path, max_shard_size):
    src = layouts["t5_sharded"]
    before = checksums(src)
    ckpt = resave(src, tmp_path / "out", max_shard_size=max_shard_size)
    limit = None if max_shard_size is None else (20_000 if max_shard_size == "20KB" else max_shard_size)
    shards = check_shards(ckpt.path, limit, "model")
    assert ckpt.weight_files == shards
    assert (ckpt.path / "config.json").read_bytes() == (src / "config.json").read_bytes()
    assert_same_tensors(safetensors_state(ckpt.path), safetensors_state(src))
    assert torch.equal(t5_output(ckpt.path), t5_output(src))
    assert checksums(src) == before


@pytest.mark.parametrize("max_shard_size", [None, "30KB"])
def test_diffusers_vae_resharded_loads_with_identical_outputs(layouts, tmp_path, max_shard_size):
    src = layouts["vae_variants"]
    ckpt = resave(src, tmp_path / "out", max_shard_size=max_shard_size)
    check_shards(ckpt.path, 30_000 if max_shard_size else None, "diffusion_pytorch_model")
    # Only the default set is written; the fp16 variant of the source is not copied along.
    assert not any(".fp16" in p.name for p in ckpt.path.iterdir())
    default = safetensors_state(src, "diffusion_pytorch_model-*.safetensors")
    assert_same_tensors(safetensors_state(ckpt.path), default)
    assert torch.equal(vae_output(ckpt.path), vae_output(src))


def test_core_ml_case_single_file_transformer(layouts, tmp_path):
    src = tmp_path / "sharded"
    from tests._models import build_pixart

    build_pixart().save_pretrained(src, max_shard_size="10KB")
    assert len(list(src.glob("*.safetensors"))) > 3
    ckpt = resave(src, tmp_path / "single", max_shard_size=None)
    assert sorted(p.name for p in ckpt.path.iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    assert torch.equal(pixart_output(ckpt.path), pixart_output(src))


def _rounded(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def test_variant_fp16_from_default_weights_casts_and_names_the_variant(layouts, tmp_path):
    src = layouts["t5_sharded"]
    ckpt = resave(src, tmp_path / "out", variant="fp16", max_shard_size="20KB")
    assert ckpt.variant == "fp16"
    check_shards(ckpt.path, 20_000, "model", "fp16")
    assert_same_tensors(safetensors_state(ckpt.path), _rounded(safetensors_state(src), torch.float16))
    # transformers finds the variant by its own naming rules; upcast on load, the outputs equal the
    # original model's with weights rounded through fp16, exactly.
    from transformers import T5EncoderModel

    reference = T5EncoderModel.from_pretrained(src).eval()
    with torch.no_grad():
        for param in reference.parameters():
            param.copy_(param.half().float())
        want = reference(T5_INPUT).last_hidden_state
    got = t5_output(ckpt.path, variant="fp16", **dtype_kwarg(torch.float32))
    assert torch.equal(got, want)
    assert torch.allclose(got, t5_output(src), atol=1e-2)


def test_variant_fp16_reads_the_existing_fp16_files(layouts, tmp_path):
    src = layouts["vae_variants"]
    ckpt = resave(src, tmp_path / "out", variant="fp16", max_shard_size=None)
    assert [p.name for p in ckpt.weight_files] == ["diffusion_pytorch_model.fp16.safetensors"]
    assert_same_tensors(safetensors_state(ckpt.path), safetensors_state(src, "*.fp16-*.safetensors"))
    assert torch.equal(vae_output(ckpt.path, variant="fp16"), vae_output(src, variant="fp16"))


def test_dtype_conversion_diffusers(layouts, tmp_path):
    src = layouts["vae_variants"]
    ckpt = resave(src, tmp_path / "out", dtype="fp16", max_shard_size="40KB")
    assert ckpt.variant is None
    check_shards(ckpt.path, 40_000, "diffusion_pytorch_model")
    default = safetensors_state(src, "diffusion_pytorch_model-*.safetensors")
    assert_same_tensors(safetensors_state(ckpt.path), _rounded(default, torch.float16))
    got = vae_output(ckpt.path, torch_dtype=torch.float32)
    assert torch.allclose(got, vae_output(src), atol=2e-2)


def test_dtype_bf16_with_variant(layouts, tmp_path):
    src = layouts["pixart"]
    ckpt = resave(src, tmp_path / "out", variant="bf16", max_shard_size=None)
    assert [p.name for p in ckpt.weight_files] == ["diffusion_pytorch_model.bf16.safetensors"]
    with safe_open(ckpt.weight_files[0], "pt") as handle:
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()}  # noqa: SIM118 (safe_open is no dict) == {"BF16"}
    default = load_file(src / "diffusion_pytorch_model.safetensors")
    assert_same_tensors(safetensors_state(ckpt.path, "*.bf16.safetensors"), _rounded(default, torch.bfloat16))
    assert pixart_output(ckpt.path, variant="bf16", torch_dtype=torch.float32).shape == (1, 8, 8, 8)


def test_torch_bin_source_becomes_model_safetensors(layouts, tmp_path):
    src = layouts["t5_bin"]
    ckpt = resave(src, tmp_path / "out", max_shard_size="30KB")
    shards = check_shards(ckpt.path, 30_000, "model")
    assert all(p.name.startswith("model") for p in shards)
    want = torch.load(src / "pytorch_model.bin", weights_only=True)
    assert_same_tensors(safetensors_state(ckpt.path), want)
    assert torch.equal(t5_output(ckpt.path), t5_output(src))


def test_torch_bin_with_dtype(layouts, tmp_path):
    src = layouts["t5_bin"]
    ckpt = resave(src, tmp_path / "out", dtype="bf16", max_shard_size=None)
    want = torch.load(src / "pytorch_model.bin", weights_only=True)
    assert_same_tensors(safetensors_state(ckpt.path), _rounded(want, torch.bfloat16))


def test_torch_file_with_a_nested_state_dict_needs_unwrap(layouts, tmp_path):
    from ckptkit import CorruptCheckpointError

    src = tmp_path / "ckpt"
    src.mkdir()
    state = torch.load(layouts["t5_bin"] / "pytorch_model.bin", weights_only=True)
    torch.save({"state_dict": state, "epoch": 3}, src / "model.pt")
    with pytest.raises(CorruptCheckpointError, match="unwrap"):
        resave(src, tmp_path / "a")
    assert not (tmp_path / "a").exists()
    ckpt = resave(src, tmp_path / "b", unwrap="state_dict", max_shard_size=None)
    assert [p.name for p in ckpt.weight_files] == ["model.safetensors"]
    assert_same_tensors(safetensors_state(ckpt.path), state)


def test_progress_bar(layouts, tmp_path, capsys):
    from ckptkit import materialize

    resave(layouts["t5_sharded"], tmp_path / "a", max_shard_size=None, progress=True)
    assert "resave" in capsys.readouterr().err
    materialize(tmp_path / "a", tmp_path / "b.tar", archive="tar", progress=True)
    assert "materialize" in capsys.readouterr().err


def test_pipeline_resaves_every_component(layouts, tmp_path):
    src = layouts["pipeline"]
    before = checksums(src)
    ckpt = resave(src, tmp_path / "pipe", variant="fp16", max_shard_size="30KB")
    out = ckpt.path
    assert (out / "model_index.json").read_bytes() == (src / "model_index.json").read_bytes()
    assert (out / "scheduler" / "scheduler_config.json").is_file()
    for component, name in [
        ("text_encoder", "model"),
        ("vae", "diffusion_pytorch_model"),
        ("transformer", "diffusion_pytorch_model"),
    ]:
        check_shards(out / component, 30_000, name, "fp16")
        assert (out / component / "config.json").is_file()
    assert {p.parent.name for p in ckpt.weight_files} == {"text_encoder", "vae", "transformer"}
    # vae has fp16 files: they are what was read; the others were cast from their defaults.
    assert_same_tensors(
        safetensors_state(out / "vae"), safetensors_state(src / "vae", "*.fp16-*.safetensors")
    )
    assert_same_tensors(
        safetensors_state(out / "text_encoder"),
        _rounded(safetensors_state(src / "text_encoder"), torch.float16),
    )
    assert torch.equal(
        vae_output(out, subfolder="vae", variant="fp16"), vae_output(src, subfolder="vae", variant="fp16")
    )
    assert (
        pixart_output(out, subfolder="transformer", variant="fp16", torch_dtype=torch.float32)
        .isfinite()
        .all()
    )
    assert checksums(src) == before


def test_pipeline_subfolder_writes_the_component_alone(layouts, tmp_path):
    ckpt = resave(layouts["pipeline"], tmp_path / "vae", subfolder="vae", max_shard_size=None)
    assert sorted(p.name for p in ckpt.path.iterdir()) == [
        "config.json",
        "diffusion_pytorch_model.safetensors",
    ]
    assert torch.equal(vae_output(ckpt.path), vae_output(layouts["pipeline"], subfolder="vae"))


def test_weights_name_and_single_file_source(layouts, tmp_path):
    single = layouts["t5_single"] / "model.safetensors"
    ckpt = resave(single, tmp_path / "out", max_shard_size="30KB", weights_name="text_encoder")
    assert all(p.name.startswith("text_encoder-0000") for p in ckpt.weight_files)
    # A file source carries no directory: nothing else is copied.
    assert not (ckpt.path / "config.json").exists()
    assert_same_tensors(safetensors_state(ckpt.path), load_file(single))


def test_mixed_dtypes_and_odd_tensors_round_trip(tmp_path):
    from safetensors.torch import save_file

    state = {
        "scalar": torch.tensor(3.5, dtype=torch.float64),
        "empty": torch.zeros(0, 4),
        "mask": torch.tensor([True, False, True]),
        "ids": torch.arange(7, dtype=torch.int64),
        "half": torch.randn(5, 3).half(),
        "bf": torch.randn(2, 9).bfloat16(),
        "byte": torch.arange(11, dtype=torch.uint8),
        "f8": torch.randn(4, 4).to(torch.float8_e4m3fn),
        "weight": torch.randn(33, 17),
    }
    src = tmp_path / "src"
    src.mkdir()
    save_file(state, src / "model.safetensors", metadata={"format": "pt"})
    ckpt = resave(src, tmp_path / "same", max_shard_size=None)
    # The reference writer's layout, byte for byte.
    assert ckpt.weight_files[0].read_bytes() == (src / "model.safetensors").read_bytes()
    for size in (1, 64, 300):
        out = resave(src, tmp_path / f"s{size}", max_shard_size=size)
        got = safetensors_state(out.path)
        assert sorted(got) == sorted(state)
        for key, value in state.items():
            assert got[key].dtype == value.dtype and torch.equal(
                got[key].reshape(-1).view(torch.uint8), value.reshape(-1).view(torch.uint8)
            )
    converted = safetensors_state(resave(src, tmp_path / "fp16", dtype="fp16", max_shard_size=None).path)
    for key, value in state.items():
        want = value.half() if value.is_floating_point() else value
        assert converted[key].dtype == want.dtype and torch.equal(converted[key], want), key


def test_greedy_split_matches_huggingface_hub(tmp_path):
    from huggingface_hub import split_torch_state_dict_into_shards

    from ckptkit.io.writer import PlannedTensor, plan_shards

    sizes = [6, 6, 2, 6, 2, 2, 11, 1, 5]
    state = {f"t{i}": torch.zeros(n, dtype=torch.uint8) for i, n in enumerate(sizes)}
    for limit in (1, 6, 8, 10, 12, 100):
        want = split_torch_state_dict_into_shards(
            state, max_shard_size=limit, filename_pattern="model{suffix}.safetensors"
        )
        got = plan_shards(
            [PlannedTensor(k, "U8", (v.numel(),), v.numel()) for k, v in state.items()],
            max_shard_size=limit,
            weights_name="model",
        )
        assert {s.filename: [t.name for t in s.tensors] for s in got} == want.filename_to_tensors


def test_cli_resave(layouts, tmp_path, capsys):
    from ckptkit.cli import main

    out = tmp_path / "out"
    code = main(
        [
            "resave",
            str(layouts["t5_sharded"]),
            str(out),
            "--max-shard-size",
            "none",
            "--dtype",
            "bf16",
            "--json",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and [Path(f["path"]).name for f in report["files"]] == ["model.safetensors"]
    assert main(["resave", str(layouts["t5_sharded"]), str(out)]) == 1
    assert "overwrite" in capsys.readouterr().err
    assert (
        main(
            ["resave", str(layouts["t5_sharded"]), str(out), "--overwrite", "--variant", "fp16", "--no-fsync"]
        )
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.fp16.safetensors",
        "model.safetensors",
    ]
    assert main(["resave", str(layouts["t5_sharded"]), str(tmp_path / "x"), "--max-shard-size", "lots"]) == 2


def test_import_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys, ckptkit; ckptkit.resave; ckptkit.materialize; assert 'torch' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_reshard_without_dtype_change_never_imports_torch(layouts, tmp_path):
    import subprocess
    import sys

    code = (
        "import sys; from ckptkit import resave; "
        "resave(sys.argv[1], sys.argv[2], max_shard_size='30KB'); assert 'torch' not in sys.modules"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    subprocess.run(
        [sys.executable, "-c", code, str(layouts["t5_sharded"]), str(tmp_path / "out")], check=True, env=env
    )
    assert_same_tensors(safetensors_state(tmp_path / "out"), safetensors_state(layouts["t5_sharded"]))
