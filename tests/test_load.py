"""load_sharded into a dict: equality with safetensors/torch for every layout, variants, errors."""

from __future__ import annotations

import gc
import json
import struct
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ckptkit import (
    CheckpointNotFoundError,
    CkptWarning,
    CorruptCheckpointError,
    IncompleteCheckpointError,
    UnsafeCheckpointError,
    VariantNotFoundError,
    load_sharded,
)
from tests._models import to_legacy_variant_names


def reference(directory: Path, weights: str) -> dict[str, torch.Tensor]:
    """The tensors as safetensors/torch read them: ``weights`` is an index or a single file."""
    path = directory / weights
    if weights.endswith(".json"):
        shards = sorted(set(json.loads(path.read_text())["weight_map"].values()))
        out: dict[str, torch.Tensor] = {}
        for shard in shards:
            out.update(reference(directory, shard))
        return out
    if weights.endswith(".safetensors"):
        return load_file(path)
    return torch.load(path, weights_only=True, map_location="cpu")


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want) or set(got) == set(want)
    for key, tensor in want.items():
        assert got[key].dtype == tensor.dtype, key
        assert got[key].shape == tensor.shape, key
        assert torch.equal(got[key], tensor), key


CASES = [
    ("t5_sharded", {}, "model.safetensors.index.json"),
    ("t5_single", {}, "model.safetensors"),
    ("t5_variants", {}, "model.safetensors.index.json"),
    ("t5_variants", {"variant": "fp16"}, "model.safetensors.index.fp16.json"),
    ("t5_fp16_only", {"variant": "fp16"}, "model.safetensors.index.fp16.json"),
    ("t5_bin", {}, "pytorch_model.bin"),
    ("vae_variants", {}, "diffusion_pytorch_model.safetensors.index.json"),
    ("vae_variants", {"variant": "fp16"}, "diffusion_pytorch_model.safetensors.index.fp16.json"),
    ("vae_legacy", {"variant": "fp16"}, "diffusion_pytorch_model.safetensors.fp16.index.json"),
    ("pixart", {}, "diffusion_pytorch_model.safetensors"),
    ("pixart", {"variant": "fp16"}, "diffusion_pytorch_model.fp16.safetensors"),
]


@pytest.mark.parametrize(("layout", "kwargs", "weights"), CASES)
def test_equal_to_reference_loaders(layouts, layout, kwargs, weights):
    got = load_sharded(layouts[layout], **kwargs)
    assert_same(got, reference(layouts[layout], weights))


@pytest.mark.parametrize(
    ("subfolder", "weights"),
    [
        ("text_encoder", "model.safetensors.index.json"),
        ("vae", "diffusion_pytorch_model.safetensors.index.json"),
        ("transformer", "diffusion_pytorch_model.safetensors"),
    ],
)
def test_pipeline_components(layouts, subfolder, weights):
    got = load_sharded(layouts["pipeline"], subfolder=subfolder)
    assert_same(got, reference(layouts["pipeline"] / subfolder, weights))


@pytest.mark.parametrize("num_threads", [1, 3])
def test_thread_counts_and_progress_agree(layouts, num_threads, capsys):
    got = load_sharded(layouts["vae_variants"], num_threads=num_threads, progress=True, mmap=False)
    assert_same(got, reference(layouts["vae_variants"], "diffusion_pytorch_model.safetensors.index.json"))
    assert "Loading weights" in capsys.readouterr().err


def file_mappings(paths) -> dict[str, list[tuple[int, int]]]:
    """Path -> (start, end) of each of this process's mappings of it, from /proc/self/maps."""
    wanted = {str(p) for p in paths}
    spans: dict[str, list[tuple[int, int]]] = {}
    for line in Path("/proc/self/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5] in wanted:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            spans.setdefault(parts[5], []).append((start, end))
    return spans


def _inside(tensor: torch.Tensor, spans) -> bool:
    first, last = tensor.data_ptr(), tensor.data_ptr() + tensor.numel() * tensor.element_size()
    return any(start <= first and last <= end for start, end in spans)


def test_default_tensors_are_views_of_one_map_per_file(layouts):
    directory = layouts["t5_sharded"]
    shards = sorted(directory.glob("*.safetensors"))
    assert len(shards) > 1 and not file_mappings(shards)
    got = load_sharded(directory)
    assert_same(got, reference(directory, "model.safetensors.index.json"))
    spans = file_mappings(shards)
    # one copy-on-write map per shard, and every tensor inside its own shard's map: no second copy
    assert sorted(spans) == [str(p) for p in shards] and all(len(s) == 1 for s in spans.values())
    index = json.loads((directory / "model.safetensors.index.json").read_text())["weight_map"]
    for name, tensor in got.items():
        assert _inside(tensor, spans[str(directory / index[name])]), name
    del got, tensor
    gc.collect()
    assert not file_mappings(shards)  # the maps go with the tensors


def test_default_tensors_are_copy_on_write(layouts, tmp_path):
    source = layouts["t5_single"] / "model.safetensors"
    copy = tmp_path / "model.safetensors"
    copy.write_bytes(source.read_bytes())
    got = load_sharded(tmp_path)
    name = next(n for n, t in got.items() if t.is_floating_point() and t.numel() > 1)
    want = got[name].clone()
    got[name].add_(1)
    assert copy.read_bytes() == source.read_bytes()
    assert torch.equal(load_sharded(tmp_path)[name], want)


def test_a_cast_is_private(layouts):
    directory = layouts["t5_single"]
    got = load_sharded(directory, dtype=torch.float16)
    spans = [s for spans in file_mappings([directory / "model.safetensors"]).values() for s in spans]
    assert not any(_inside(t, spans) for t in got.values() if t.is_floating_point())


def test_mmap_false_results_are_private_memory(layouts):
    directory = layouts["t5_sharded"]
    got = load_sharded(directory, mmap=False)
    assert_same(got, reference(directory, "model.safetensors.index.json"))
    assert not file_mappings(directory.glob("*.safetensors"))


def test_mmap_false_results_do_not_share_storage(layouts):
    got = load_sharded(layouts["t5_sharded"], mmap=False)
    pointers = [t.untyped_storage().data_ptr() for t in got.values() if t.numel()]
    assert len(pointers) == len(set(pointers))


def test_mmap_torch_file(layouts):
    got = load_sharded(layouts["t5_bin"], mmap=True)
    assert_same(got, reference(layouts["t5_bin"], "pytorch_model.bin"))


@pytest.mark.parametrize("dtype", ["bf16", torch.float16])
def test_dtype_cast_while_loading(layouts, dtype):
    want = {
        k: v.to(torch.bfloat16 if dtype == "bf16" else dtype)
        for k, v in reference(layouts["t5_sharded"], "model.safetensors.index.json").items()
    }
    assert_same(load_sharded(layouts["t5_sharded"], dtype=dtype), want)


def test_cast_crosses_chunk_boundaries(layouts, monkeypatch):
    from ckptkit.io import reader

    monkeypatch.setattr(reader, "CHUNK_BYTES", 1000)
    want = {k: v.half() for k, v in reference(layouts["t5_single"], "model.safetensors").items()}
    assert_same(load_sharded(layouts["t5_single"], dtype="fp16", num_threads=3), want)


def test_cuda_without_cuda_is_a_clear_error(layouts):
    if torch.cuda.is_available():
        pytest.skip("this check is about machines without CUDA")
    with pytest.raises(ValueError, match="CUDA is not available"):
        load_sharded(layouts["t5_single"], device="cuda:0")


# -- variant rules, through select_weight_set ---------------------------------------------------


@pytest.fixture
def legacy_with_default(layout_copy) -> Path:
    """Default weights plus fp16 shards named in the legacy scheme."""
    directory = layout_copy("vae_variants")
    to_legacy_variant_names(directory)
    assert (directory / "diffusion_pytorch_model.safetensors.fp16.index.json").exists()
    return directory


def _schemes(layouts, legacy_with_default):
    return {
        "current": (layouts["t5_variants"], "model.safetensors.index.json"),
        "legacy": (legacy_with_default, "diffusion_pytorch_model.safetensors.index.json"),
    }


@pytest.mark.parametrize("scheme", ["current", "legacy"])
def test_requested_variant_missing_warn_falls_back_and_casts(layouts, legacy_with_default, scheme):
    directory, default = _schemes(layouts, legacy_with_default)[scheme]
    with pytest.warns(CkptWarning, match=r"variant 'bf16' was requested.*cast to bfloat16.*variant_fallback"):
        got = load_sharded(directory, variant="bf16")
    assert_same(got, {k: v.bfloat16() for k, v in reference(directory, default).items()})


@pytest.mark.parametrize("scheme", ["current", "legacy"])
def test_requested_variant_missing_allow_is_silent(layouts, legacy_with_default, scheme):
    directory, default = _schemes(layouts, legacy_with_default)[scheme]
    with warnings.catch_warnings():
        warnings.simplefilter("error", CkptWarning)
        got = load_sharded(directory, variant="bf16", variant_fallback="allow")
    assert_same(got, {k: v.bfloat16() for k, v in reference(directory, default).items()})


@pytest.mark.parametrize("scheme", ["current", "legacy"])
def test_requested_variant_missing_error_raises(layouts, legacy_with_default, scheme):
    directory, _ = _schemes(layouts, legacy_with_default)[scheme]
    with pytest.raises(VariantNotFoundError, match=r"variants here are .fp16. and the default weights"):
        load_sharded(directory, variant="bf16", variant_fallback="error")


def test_explicit_dtype_wins_over_fallback_cast(layouts):
    with pytest.warns(CkptWarning):
        got = load_sharded(layouts["t5_sharded"], variant="fp16", dtype="fp32")
    assert_same(got, reference(layouts["t5_sharded"], "model.safetensors.index.json"))


@pytest.mark.parametrize("scheme", ["current", "legacy"])
def test_requested_variant_present_is_used(layouts, legacy_with_default, scheme):
    directory, _ = _schemes(layouts, legacy_with_default)[scheme]
    index = next(directory.glob("*fp16*.json")).name
    with warnings.catch_warnings():
        warnings.simplefilter("error", CkptWarning)
        got = load_sharded(directory, variant="fp16", variant_fallback="error")
    assert_same(got, reference(directory, index))


@pytest.mark.parametrize(
    ("layout", "index"),
    [
        ("t5_fp16_only", "model.safetensors.index.fp16.json"),
        ("vae_legacy", "diffusion_pytorch_model.safetensors.fp16.index.json"),
    ],
)
@pytest.mark.parametrize("policy", ["warn", "allow", "error"])
def test_no_default_single_variant_is_used_with_warning(layouts, layout, index, policy):
    with pytest.warns(CkptWarning, match=r"only the 'fp16' variant.*variant='fp16'"):
        got = load_sharded(layouts[layout], variant_fallback=policy)
    assert_same(got, reference(layouts[layout], index))


# -- bad input ------------------------------------------------------------------------------------


def test_missing_shard_names_shard_and_index(layout_copy):
    directory = layout_copy("t5_sharded")
    (directory / "model-00005-of-00005.safetensors").unlink()
    with pytest.raises(
        IncompleteCheckpointError, match=r"model\.safetensors\.index\.json.*model-00005-of-00005"
    ):
        load_sharded(directory)


def test_truncated_shard(layout_copy):
    directory = layout_copy("t5_sharded")
    shard = directory / "model-00005-of-00005.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(CorruptCheckpointError, match=r"model-00005-of-00005.*truncated"):
        load_sharded(directory)


def test_empty_tensor_with_a_dimension_torch_cannot_hold(tmp_path):
    # Valid safetensors (no bytes), but torch sizes are signed 64-bit.
    blob = json.dumps({"e": {"dtype": "F32", "shape": [0, 2**63], "data_offsets": [0, 0]}}).encode()
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob)
    with pytest.raises(CorruptCheckpointError, match=r"model\.safetensors.*'e'.*2\*\*63"):
        load_sharded(tmp_path)


def test_nothing_there(tmp_path):
    with pytest.raises(CheckpointNotFoundError):
        load_sharded(tmp_path / "absent")


class _Evil:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def test_malicious_pickle_is_refused_without_running(tmp_path):
    sentinel = tmp_path / "pwned"
    directory = tmp_path / "ckpt"
    directory.mkdir()
    torch.save({"weight": torch.ones(2), "payload": _Evil(sentinel)}, directory / "pytorch_model.bin")
    assert not sentinel.exists()
    with pytest.raises(UnsafeCheckpointError, match=r"pytorch_model\.bin"):
        load_sharded(directory)
    assert not sentinel.exists()


# -- torch files ----------------------------------------------------------------------------------


def _torch_sharded(directory: Path) -> dict[str, torch.Tensor]:
    """A sharded pytorch_model.bin with its index, as transformers v4 wrote them."""
    directory.mkdir()
    torch.manual_seed(0)
    state = {f"layer{i}.{n}": torch.randn(4, 3) for i in range(4) for n in ("weight", "bias")}
    names = sorted(state)
    shards = {"pytorch_model-00001-of-00002.bin": names[:4], "pytorch_model-00002-of-00002.bin": names[4:]}
    weight_map = {}
    for shard, keys in shards.items():
        torch.save({k: state[k] for k in keys}, directory / shard)
        weight_map.update(dict.fromkeys(keys, shard))
    (directory / "pytorch_model.bin.index.json").write_text(
        json.dumps({"metadata": {"total_size": 0}, "weight_map": weight_map})
    )
    return state


def test_sharded_torch_index(tmp_path):
    state = _torch_sharded(tmp_path / "bin")
    assert_same(load_sharded(tmp_path / "bin"), state)


def test_sharded_torch_prefix_opens_only_needed_shard(tmp_path):
    state = _torch_sharded(tmp_path / "bin")
    other = tmp_path / "bin" / "pytorch_model-00002-of-00002.bin"
    other.write_bytes(other.read_bytes()[:100])  # damaged, but not needed for layer0.
    got = load_sharded(tmp_path / "bin", prefix="layer0.")
    assert_same(got, {k[len("layer0.") :]: v for k, v in state.items() if k.startswith("layer0.")})
    with pytest.raises(CorruptCheckpointError, match=r"pytorch_model-00002-of-00002\.bin"):
        load_sharded(tmp_path / "bin")


def test_truncated_torch_shard_raises_before_loading(tmp_path):
    _torch_sharded(tmp_path / "bin")
    last = tmp_path / "bin" / "pytorch_model-00002-of-00002.bin"
    last.write_bytes(last.read_bytes()[:-30])
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        load_sharded(tmp_path / "bin")


def test_wrapped_torch_file_is_reported_then_unwrapped(tmp_path):
    state = {"w": torch.arange(4.0), "b": torch.zeros(2)}
    (tmp_path / "ckpt").mkdir()
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt" / "model.pt")
    with pytest.raises(CorruptCheckpointError, match="unwrap='state_dict'"):
        load_sharded(tmp_path / "ckpt")
    assert_same(load_sharded(tmp_path / "ckpt", unwrap="state_dict"), state)
    assert_same(load_sharded(tmp_path / "ckpt" / "model.pt", unwrap=True), state)


# -- key selection --------------------------------------------------------------------------------


def _two_shards_with_prefixes(directory: Path) -> dict[str, torch.Tensor]:
    directory.mkdir()
    state = {
        "module._orig_mod.vae.conv.weight": torch.randn(3, 3),
        "module._orig_mod.vae.conv.bias": torch.randn(3),
        "module.text.embed.weight": torch.randn(5, 2),
    }
    save_file(
        {k: v for k, v in state.items() if ".vae." in k}, directory / "model-00001-of-00002.safetensors"
    )
    save_file(
        {k: v for k, v in state.items() if ".text." in k}, directory / "model-00002-of-00002.safetensors"
    )
    weight_map = {k: f"model-0000{1 if '.vae.' in k else 2}-of-00002.safetensors" for k in state}
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    return state


def test_prefix_and_strip_prefixes(tmp_path):
    state = _two_shards_with_prefixes(tmp_path / "c")
    got = load_sharded(tmp_path / "c", prefix="vae.", strip_prefixes=("module.", "_orig_mod."))
    assert_same(
        got,
        {
            "conv.weight": state["module._orig_mod.vae.conv.weight"],
            "conv.bias": state["module._orig_mod.vae.conv.bias"],
        },
    )
    got = load_sharded(tmp_path / "c", strip_prefixes=["module.", "_orig_mod."])
    assert set(got) == {"vae.conv.weight", "vae.conv.bias", "text.embed.weight"}


def test_prefix_opens_only_needed_shards(tmp_path):
    _two_shards_with_prefixes(tmp_path / "c")
    (tmp_path / "c" / "model-00002-of-00002.safetensors").write_bytes(b"garbage")
    got = load_sharded(tmp_path / "c", prefix="module._orig_mod.vae.")
    assert set(got) == {"conv.weight", "conv.bias"}
    with pytest.raises(CorruptCheckpointError, match="model-00002-of-00002"):
        load_sharded(tmp_path / "c")


@pytest.mark.parametrize("layout", ["t5_sharded", "t5_bin"])
def test_prefix_matching_nothing_warns(layouts, layout):
    with pytest.warns(CkptWarning, match="no key starts with prefix 'vae.'"):
        assert load_sharded(layouts[layout], prefix="vae.") == {}
