"""load_sharded into modules: meta-built models match from_pretrained; strictness; in-place fills."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from safetensors.torch import save_file
from torch import nn

from ckptkit import CkptError, CorruptCheckpointError, IncompleteCheckpointError, LoadResult, load_sharded


def _meta_t5(directory: Path):
    from transformers import T5Config, T5EncoderModel

    with init_empty_weights():
        return T5EncoderModel(T5Config.from_pretrained(directory))


def _meta_diffusers(cls, directory: Path):
    with init_empty_weights():
        return cls.from_config(cls.load_config(directory))


def _assert_no_meta(model: nn.Module) -> None:
    assert not [n for n, p in model.named_parameters() if p.is_meta]


def _assert_same_model(
    got: nn.Module, want: nn.Module, got_out: torch.Tensor, want_out: torch.Tensor
) -> None:
    """Bit-identical weights, and outputs equal up to float rounding: kernels may take another
    path for the same values in differently laid-out memory (from_pretrained keeps file-mapped
    tensors; cloning them makes the outputs bit-identical too)."""
    got_state, want_state = got.state_dict(), want.state_dict()
    assert set(got_state) == set(want_state)
    for key, tensor in want_state.items():
        assert got_state[key].dtype == tensor.dtype and torch.equal(got_state[key], tensor), key
    torch.testing.assert_close(got_out, want_out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layout", ["t5_sharded", "t5_single"])
def test_meta_t5_matches_from_pretrained(layouts, layout):
    from transformers import T5EncoderModel

    model = _meta_t5(layouts[layout])
    result = load_sharded(layouts[layout], model=model)
    assert result == LoadResult([], [])
    _assert_no_meta(model.eval())
    assert model.shared.weight is model.encoder.embed_tokens.weight  # still tied
    reference = T5EncoderModel.from_pretrained(layouts[layout]).eval()
    ids = torch.tensor([[1, 5, 7, 9, 2]])
    with torch.no_grad():
        _assert_same_model(
            model,
            reference,
            model(input_ids=ids).last_hidden_state,
            reference(input_ids=ids).last_hidden_state,
        )


def test_meta_vae_matches_from_pretrained(layouts):
    from diffusers import AutoencoderKL

    directory = layouts["vae_variants"]
    model = _meta_diffusers(AutoencoderKL, directory)
    assert load_sharded(directory, model=model) == LoadResult([], [])
    _assert_no_meta(model.eval())
    reference = AutoencoderKL.from_pretrained(directory).eval()
    sample = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model.decode(model.encode(sample).latent_dist.mode()).sample
        want = reference.decode(reference.encode(sample).latent_dist.mode()).sample
    _assert_same_model(model, reference, got, want)


def test_meta_vae_fp16_variant_matches_from_pretrained(layouts):
    from diffusers import AutoencoderKL

    directory = layouts["vae_variants"]
    model = _meta_diffusers(AutoencoderKL, directory)
    load_sharded(directory, model=model, variant="fp16")
    reference = AutoencoderKL.from_pretrained(directory, variant="fp16", torch_dtype=torch.float16)
    for (name, got), (_, want) in zip(
        model.state_dict().items(), reference.state_dict().items(), strict=True
    ):
        assert got.dtype == want.dtype == torch.float16, name
        assert torch.equal(got, want), name


def test_meta_pixart_matches_from_pretrained(layouts):
    from diffusers import PixArtTransformer2DModel

    directory = layouts["pixart"]
    model = _meta_diffusers(PixArtTransformer2DModel, directory)
    assert load_sharded(directory, model=model) == LoadResult([], [])
    _assert_no_meta(model.eval())
    reference = PixArtTransformer2DModel.from_pretrained(directory).eval()
    generator = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(1, 4, 8, 8, generator=generator),
        "encoder_hidden_states": torch.randn(1, 3, 32, generator=generator),
        "timestep": torch.tensor([10]),
        "added_cond_kwargs": {"resolution": None, "aspect_ratio": None},
    }
    with torch.no_grad():
        _assert_same_model(model, reference, model(**inputs).sample, reference(**inputs).sample)


def test_meta_model_with_dtype_and_pipeline_subfolder(layouts):
    from diffusers import AutoencoderKL

    model = _meta_diffusers(AutoencoderKL, layouts["pipeline"] / "vae")
    load_sharded(layouts["pipeline"], subfolder="vae", model=model, dtype="bf16")
    reference = AutoencoderKL.from_pretrained(layouts["pipeline"], subfolder="vae")
    for name, want in reference.state_dict().items():
        got = model.state_dict()[name]
        assert got.dtype == torch.bfloat16 and torch.equal(got, want.bfloat16()), name


def test_materialized_model_is_filled_in_place(layouts):
    from tests._models import build_t5

    model = build_t5(seed=1)
    pointers = {n: p.data_ptr() for n, p in model.named_parameters()}
    load_sharded(layouts["t5_sharded"], model=model)
    assert pointers == {n: p.data_ptr() for n, p in model.named_parameters()}
    want = build_t5(seed=0).state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())


def test_torch_file_into_meta_model(layouts):
    from transformers import T5EncoderModel

    model = _meta_t5(layouts["t5_bin"])
    result = load_sharded(layouts["t5_bin"], model=model)
    assert result.unexpected_keys == []
    _assert_no_meta(model)
    want = T5EncoderModel.from_pretrained(layouts["t5_single"]).state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())


@pytest.mark.parametrize("mmap", [False, True])
def test_mmap_into_meta_model(layouts, mmap):
    from transformers import T5EncoderModel

    from tests.test_load import file_mappings

    directory = layouts["t5_sharded"]
    shards = sorted(directory.glob("*.safetensors"))
    model = _meta_t5(directory)
    load_sharded(directory, model=model, mmap=mmap)
    want = T5EncoderModel.from_pretrained(directory).state_dict()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())
    del want
    gc.collect()
    spans = [span for found in file_mappings(shards).values() for span in found]
    inside = [any(start <= t.data_ptr() < end for start, end in spans) for t in model.state_dict().values()]
    # default: every weight is a view of its shard's copy-on-write map; mmap=False: all private
    assert all(inside) if mmap else not any(inside)
    assert len(spans) == (len(shards) if mmap else 0)


# -- strictness and errors before the model is touched --------------------------------------------


class _Small(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(2, 2)
        self.register_buffer("b", torch.zeros(3))
        self.register_buffer("scratch", torch.zeros(1), persistent=False)


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in before.items())


def test_strict_lists_missing_and_unexpected_and_touches_nothing(tmp_path):
    save_file(
        {"a.weight": torch.ones(2, 2), "a.bias": torch.ones(2), "c": torch.ones(1)},
        tmp_path / "model.safetensors",
    )
    model = _Small()
    before = _snapshot(model)
    with pytest.raises(CkptError, match=r"1 missing keys \['b'\], 1 unexpected keys \['c'\]"):
        load_sharded(tmp_path, model=model)
    assert _unchanged(model, before)
    result = load_sharded(tmp_path, model=model, strict=False)
    assert result == LoadResult(missing_keys=["b"], unexpected_keys=["c"])
    assert torch.equal(model.a.weight, torch.ones(2, 2))


def test_strict_with_strip_prefixes(tmp_path):
    state = {"module.a.weight": torch.ones(2, 2), "module.a.bias": torch.ones(2), "module.b": torch.ones(3)}
    save_file(state, tmp_path / "model.safetensors")
    model = _Small()
    assert load_sharded(tmp_path, model=model, strip_prefixes="module.") == LoadResult([], [])
    assert torch.equal(model.b, torch.ones(3))


def test_shape_mismatch_raises_before_touching(tmp_path):
    save_file(
        {"a.weight": torch.ones(3, 2), "a.bias": torch.ones(2), "b": torch.ones(3)},
        tmp_path / "model.safetensors",
    )
    model = _Small()
    before = _snapshot(model)
    with pytest.raises(CkptError, match=r"a\.weight: checkpoint \(3, 2\) vs model \(2, 2\)"):
        load_sharded(tmp_path, model=model)
    assert _unchanged(model, before)


def test_truncated_last_shard_raises_before_model_is_touched(layout_copy):
    from tests._models import build_t5

    directory = layout_copy("t5_sharded")
    shard = directory / "model-00005-of-00005.safetensors"
    shard.write_bytes(shard.read_bytes()[:-4])
    model = build_t5(seed=1)
    before = _snapshot(model)
    with pytest.raises(CorruptCheckpointError, match="model-00005-of-00005"):
        load_sharded(directory, model=model)
    assert _unchanged(model, before)


def test_missing_last_shard_raises_before_model_is_touched(layout_copy):
    from tests._models import build_t5

    directory = layout_copy("t5_sharded")
    (directory / "model-00005-of-00005.safetensors").unlink()
    model = build_t5(seed=1)
    before = _snapshot(model)
    with pytest.raises(IncompleteCheckpointError, match="model-00005-of-00005"):
        load_sharded(directory, model=model)
    assert _unchanged(model, before)
