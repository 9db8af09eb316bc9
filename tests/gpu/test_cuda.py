"""load_sharded, module filling, placement and adapters on a real CUDA device.

Every tensor is compared with ``torch.equal`` against what safetensors' own ``load_file`` gives
(moved to the same device), dtypes included.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ckptkit import load_sharded

CUDA = torch.device("cuda", 0)


def _write_sharded(directory: Path) -> dict[str, torch.Tensor]:
    """Three shards: every stored dtype family, a tensor bigger than a staging chunk, odd sizes."""
    g = torch.Generator().manual_seed(0)
    tensors = {
        "big.weight": torch.randn(5000, 2100, generator=g).to(torch.bfloat16),  # 20 MiB > 16 MiB chunk
        "a.weight": torch.randn(257, 129, generator=g),
        "a.bias": torch.randn(129, generator=g).half(),
        "b.ids": torch.arange(1001, dtype=torch.int64),
        "b.mask": torch.rand(77, generator=g) > 0.5,
        "c.scalar": torch.tensor(3.5, dtype=torch.float64),
        "c.odd": torch.randn(3, 5, 7, generator=g).to(torch.bfloat16),
        "c.u8": torch.randint(0, 255, (4097,), generator=g, dtype=torch.uint8),
    }
    names = {"big.weight": 1, "a.weight": 2, "a.bias": 2, "b.ids": 2, "b.mask": 3}
    shards: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        shards.setdefault(names.get(key, 3), {})[key] = value
    weight_map = {}
    for i, part in shards.items():
        name = f"model-{i:05d}-of-00003.safetensors"
        save_file(part, str(directory / name))
        weight_map.update(dict.fromkeys(part, name))
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return tensors


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    directory = tmp_path_factory.mktemp("sharded")
    return directory, _write_sharded(directory)


def _reference(directory: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(directory.glob("*.safetensors")):
        out.update(load_file(str(f), device="cuda:0"))
    return out


@pytest.mark.parametrize("num_threads", [1, 4])
def test_dict_into_cuda_equals_load_file(sharded, num_threads):
    directory, _ = sharded
    got = load_sharded(directory, device="cuda:0", num_threads=num_threads, progress=False)
    want = _reference(directory)
    assert set(got) == set(want)
    for key, tensor in want.items():
        assert got[key].device == CUDA, key
        assert got[key].dtype == tensor.dtype, key
        assert torch.equal(got[key], tensor), key


def test_cast_while_staging_equals_cast_after(sharded):
    directory, _ = sharded
    got = load_sharded(directory, device="cuda:0", dtype=torch.float16, progress=False)
    for key, tensor in _reference(directory).items():
        want = tensor.to(torch.float16) if tensor.is_floating_point() else tensor
        assert got[key].dtype == want.dtype, key
        assert torch.equal(got[key], want), key


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Linear(129, 257)
        self.big = torch.nn.Linear(2100, 5000, bias=False)


def _net_checkpoint(directory: Path) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    state = {
        "a.weight": torch.randn(257, 129, generator=g),
        "a.bias": torch.randn(257, generator=g),
        "big.weight": torch.randn(5000, 2100, generator=g),
    }
    save_file(state, str(directory / "model.safetensors"))
    return state


def test_fill_materialized_cuda_model_in_place(tmp_path):
    state = _net_checkpoint(tmp_path)
    model = _Net().to(CUDA)
    pointers = {k: v.data_ptr() for k, v in model.state_dict().items()}
    result = load_sharded(tmp_path, model=model, progress=False)
    assert list(result.missing_keys) == [] and list(result.unexpected_keys) == []
    for key, value in model.state_dict().items():
        assert value.device == CUDA and value.data_ptr() == pointers[key], key
        assert torch.equal(value, state[key].to(CUDA)), key
    x = torch.randn(3, 2100, device=CUDA)
    assert torch.equal(model.big(x), x @ state["big.weight"].to(CUDA).T)


def test_fill_meta_model_onto_cuda_with_cast(tmp_path):
    state = _net_checkpoint(tmp_path)
    with torch.device("meta"):
        model = _Net()
    load_sharded(tmp_path, model=model, device="cuda:0", dtype=torch.bfloat16, progress=False)
    for key, value in model.state_dict().items():
        assert value.device == CUDA and value.dtype == torch.bfloat16, key
        assert torch.equal(value, state[key].to(CUDA, torch.bfloat16)), key


def test_device_map_auto_splits_between_gpu_and_cpu(tmp_path):
    pytest.importorskip("accelerate")
    transformers = pytest.importorskip("transformers")
    config = transformers.T5Config(
        vocab_size=512, d_model=256, d_kv=32, d_ff=1024, num_layers=6, num_heads=8, dropout_rate=0.0
    )
    torch.manual_seed(0)
    reference = transformers.T5EncoderModel(config).eval()
    reference.save_pretrained(tmp_path, safe_serialization=True)
    with torch.device("meta"):
        model = transformers.T5EncoderModel(config).eval()
    layer_bytes = sum(p.numel() * 4 for p in reference.encoder.block[0].parameters())
    budget = {0: 3 * layer_bytes + (2 << 20), "cpu": 1 << 30}
    placed = load_sharded(
        tmp_path, model=model, device_map="auto", max_memory=budget, no_split_module_classes=["T5Block"]
    )
    devices = {str(d) for d in placed.device_map.values()}
    assert devices == {"0", "cpu"} or devices == {"cuda:0", "cpu"}, placed.device_map
    ids = torch.randint(0, 512, (2, 9))
    with torch.no_grad():
        want = reference(input_ids=ids).last_hidden_state
        got = model(input_ids=ids.to(CUDA)).last_hidden_state
    torch.testing.assert_close(got.float().cpu(), want, rtol=1e-4, atol=1e-4)
    for key, value in reference.state_dict().items():
        held = model.state_dict()[key]
        if held.device.type != "meta":
            assert torch.equal(held.cpu(), value), key


def test_load_t5_adapter_onto_cuda(tmp_path):
    transformers = pytest.importorskip("transformers")
    from ckptkit.adapters import load_t5

    config = transformers.T5Config(vocab_size=300, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4)
    torch.manual_seed(0)
    reference = transformers.T5EncoderModel(config).eval()
    reference.save_pretrained(tmp_path, safe_serialization=True)
    model = load_t5(tmp_path, device_map="cuda:0", torch_dtype=torch.bfloat16)
    for key, value in reference.state_dict().items():
        held = model.state_dict()[key]
        assert held.device == CUDA and held.dtype == torch.bfloat16, key
        assert torch.equal(held, value.to(CUDA, torch.bfloat16)), key
