"""Results read well: a one-line repr, a few-line str, an HTML table for Jupyter."""

from __future__ import annotations

import torch
from accelerate import init_empty_weights

from ckptkit import inspect_checkpoint, load_sharded, plan_memory, resolve_ckpt_dir, verify_checkpoint
from ckptkit.format.display import dtype_text, html_table, text_table


def test_html_table_escapes_and_nests() -> None:
    page = html_table("a <b>", [("x", "<script>"), ("rows", [("r1", 1), ("r2", 2)])], columns=["n", "v"])
    assert "<script>" not in page and "&lt;script&gt;" in page and "a &lt;b&gt;" in page
    assert page.count("<tr>") == 5 and "<th>n</th>" in page  # two rows; nested: a header and two rows
    assert text_table("t", [("k", ["a", "b"])]).splitlines() == ["t", "  k  a", "     b"]
    assert dtype_text({}) == "-"


def test_checkpoint_dir(layouts) -> None:
    ckpt = resolve_ckpt_dir(layouts["t5_sharded"])
    text = repr(ckpt)
    assert text.startswith("<CheckpointDir ") and "5 files (sharded)" in text and "KiB" in text
    assert "PosixPath" not in text and len(text) < 200 + len(str(ckpt.path))
    assert str(ckpt) == str(ckpt.path)  # still a path where one is expected
    page = ckpt._repr_html_()
    assert "<table" in page and "model-00001-of-00005.safetensors" in page and "safetensors" in page


def test_checkpoint_info_of_a_pipeline(layouts) -> None:
    info = inspect_checkpoint(layouts["pipeline"])
    assert repr(info).endswith("pipeline of 4 components, 80,049 parameters, ok>") or "pipeline of" in repr(
        info
    )
    text = str(info)
    assert "vae: diffusers.AutoencoderKL" in text and "variants default, fp16" in text
    page = info._repr_html_()
    for column in ("component", "class", "parameters", "dtypes", "variants", "problems"):
        assert f"<th>{column}</th>" in page
    assert "transformers.T5EncoderModel" in page and "F32" in page


def test_checkpoint_info_problems_are_shown(layout_copy) -> None:
    directory = layout_copy("t5_sharded")
    next(directory.glob("model-00001-*")).unlink()
    info = inspect_checkpoint(directory)
    assert repr(info).endswith(f"{len(info.errors)} error{'s' if len(info.errors) > 1 else ''}>")
    assert "missing" in str(info).lower() and "missing" in info._repr_html_().lower()


def test_verify_report(layouts) -> None:
    report = verify_checkpoint(layouts["t5_single"])
    assert repr(report).startswith("<VerifyReport ") and ": OK, 2 files" in repr(report)
    assert "no recorded digest" in str(report) and "<table" in report._repr_html_()


def test_memory_plan(layouts) -> None:
    plan = plan_memory(layouts["pixart"], devices=2, device_memory="1GB")
    assert repr(plan).startswith("<MemoryPlan ") and "fsdp fits" in repr(plan)
    page = plan._repr_html_()
    assert "<th>strategy</th>" in page and "* fsdp" in page and "headroom" in page
    assert "weight set" in str(plan)


def test_load_result(layouts) -> None:
    from diffusers import PixArtTransformer2DModel

    with init_empty_weights():
        model = PixArtTransformer2DModel.from_config(PixArtTransformer2DModel.load_config(layouts["pixart"]))
    result = load_sharded(layouts["pixart"], model=model, dtype="bf16", progress=False)
    missing, unexpected = result  # still unpacks like torch's result
    assert missing == [] and unexpected == []
    assert result.tensors == len(model.state_dict()) and result.bytes_by_dtype.keys() == {"bfloat16"}
    assert result.bytes == sum(t.numel() * 2 for t in model.state_dict().values())
    assert result.seconds is not None and result.seconds > 0
    text = repr(result)
    assert text.startswith("<LoadResult ") and "bfloat16" in text and " s>" in text
    page = result._repr_html_()
    assert "bytes" in page and "dtypes" in page and "time" in page
    assert all(t.dtype == torch.bfloat16 for t in model.state_dict().values())
