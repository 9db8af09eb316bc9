"""``ckptkit.shims.opensora.install()``: an importable ``opensora`` package patched in place.

The package is a tiny tree built in ``tmp_path`` at upstream's module paths: its
``opensora/utils/ckpt_utils.py`` (1.3) and ``opensora/utils/ckpt.py`` (2.0) hold upstream's verbatim
loaders (the text of ``_upstream_v13.py``/``_upstream_v2.py``), and its model builders import
``load_checkpoint`` by name and register in a ``MODELS`` registry, as upstream's do.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch

import ckptkit.shims.opensora as shim
from tests.conformance.opensora._tiny import STDiT3, build, pixart_release

HERE = Path(__file__).parent

REGISTRY = """
class Registry:  # the part of mmengine.registry.Registry that builders use
    def __init__(self, name):
        self._module_dict = {}

    def register_module(self, name):
        def register(obj):
            self._module_dict[name] = obj
            return obj
        return register

    def get(self, name):
        return self._module_dict[name]


MODELS = Registry("model")
"""

STDIT3_V13 = """
from opensora.registry import MODELS
from opensora.utils.ckpt_utils import load_checkpoint
from tests.conformance.opensora._tiny import STDiT3


@MODELS.register_module("STDiT3-XL/2")
def STDiT3_XL_2(from_pretrained=None, **kwargs):
    adapt_16ch = kwargs.pop("adapt_16ch", False)
    model = STDiT3(**kwargs)
    if from_pretrained is not None:
        load_checkpoint(model, from_pretrained, adapt_16ch=adapt_16ch)
    return model
"""

T5_V13 = """
from opensora.registry import MODELS


@MODELS.register_module("t5")
class T5Encoder:  # stands in for upstream's class (AGPL, not copied); install() replaces it by identity
    pass
"""

FLUX_V2 = """
import torch

from opensora.registry import MODELS
from opensora.utils.ckpt import load_checkpoint
from tests.conformance.opensora._tiny import STDiT3


@MODELS.register_module("flux")
def Flux(cache_dir=None, from_pretrained=None, device_map="cuda", torch_dtype=torch.bfloat16, strict_load=False, **kwargs):
    with torch.device(device_map):
        model = STDiT3(**kwargs).to(torch_dtype)
    if from_pretrained:
        model = load_checkpoint(model, from_pretrained, cache_dir=cache_dir, device_map=device_map, strict=strict_load)
    return model
"""


def write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


@pytest.fixture
def package(tmp_path, monkeypatch):
    """Builds a fake ``opensora`` on sys.path; removes it (and any patch) afterwards."""

    def make(version: str) -> Path:
        root = tmp_path / f"opensora-{version}"
        files = {
            "opensora/__init__.py": "",
            "opensora/registry.py": REGISTRY,
            "opensora/utils/__init__.py": "",
            "opensora/models/__init__.py": "",
        }
        if version == "1.3":
            files["opensora/utils/ckpt_utils.py"] = (HERE / "_upstream_v13.py").read_text()
            files["opensora/models/stdit/__init__.py"] = ""
            files["opensora/models/stdit/stdit3.py"] = STDIT3_V13
            files["opensora/models/text_encoder/__init__.py"] = ""
            files["opensora/models/text_encoder/t5.py"] = T5_V13
            files["opensora/models/late.py"] = "from opensora.utils.ckpt_utils import load_checkpoint\n"
        else:
            files["opensora/utils/ckpt.py"] = (HERE / "_upstream_v2.py").read_text()
            files["opensora/models/mmdit/__init__.py"] = ""
            files["opensora/models/mmdit/model.py"] = FLUX_V2
        write(root, files)
        monkeypatch.syspath_prepend(str(root))
        return root

    yield make
    shim.uninstall()
    for name in [n for n in sys.modules if n == "opensora" or n.startswith("opensora.")]:
        del sys.modules[name]


def sigma_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A flat PixArt-Sigma file for an STDiT3: upstream 1.3 leaves spatial_blocks random with it."""
    release = pixart_release(caption_len=6)["state_dict"]
    assert isinstance(release, dict)
    release["x_embedder.proj.weight"] = release["x_embedder.proj.weight"].unsqueeze(2)
    del release["pos_embed"]
    path = tmp_path / "PixArt-Sigma-XL-2-2K-MS.pth"
    torch.save(release, path)
    return path, release


def filled(model: STDiT3, release: dict[str, torch.Tensor]) -> bool:
    return torch.equal(model.spatial_blocks[0].attn.weight, release["blocks.0.attn.weight"])


def test_install_patches_open_sora_1_3(package, tmp_path):
    package("1.3")
    import opensora.models.stdit.stdit3 as stdit3
    import opensora.models.text_encoder.t5 as t5
    import opensora.utils.ckpt_utils as ckpt_utils
    from opensora.registry import MODELS

    upstream_load, upstream_t5 = ckpt_utils.load_checkpoint, t5.T5Encoder
    path, release = sigma_file(tmp_path)
    torch.manual_seed(0)
    assert not filled(MODELS.get("STDiT3-XL/2")(from_pretrained=str(path)), release)

    names = shim.install()
    assert "opensora.utils.ckpt_utils.load_checkpoint" in names
    assert "opensora.models.stdit.stdit3.load_checkpoint" in names
    assert ckpt_utils.load_checkpoint is shim.load_checkpoint
    assert stdit3.load_checkpoint is shim.load_checkpoint
    assert t5.T5Encoder is shim.T5Encoder and MODELS.get("t5") is shim.T5Encoder
    import opensora.models.late as late  # imported after install: gets the shim

    assert late.load_checkpoint is shim.load_checkpoint
    assert shim.install() == sorted([*names, "opensora.models.late.load_checkpoint"])  # nothing re-patched
    assert filled(MODELS.get("STDiT3-XL/2")(from_pretrained=str(path)), release)

    shim.uninstall()
    assert ckpt_utils.load_checkpoint is upstream_load and stdit3.load_checkpoint is upstream_load
    assert late.load_checkpoint is upstream_load
    assert t5.T5Encoder is upstream_t5 and MODELS.get("t5") is upstream_t5
    assert not filled(MODELS.get("STDiT3-XL/2")(from_pretrained=str(path)), release)


def test_installed_context_manager_restores_on_error(package, tmp_path):
    package("1.3")
    import opensora.utils.ckpt_utils as ckpt_utils

    upstream_load = ckpt_utils.load_checkpoint
    with pytest.raises(KeyError), shim.installed() as names:
        assert ckpt_utils.load_checkpoint is shim.load_checkpoint
        assert "opensora.utils.ckpt_utils.load_checkpoint" in names
        raise KeyError("inside")
    assert ckpt_utils.load_checkpoint is upstream_load


def test_install_patches_open_sora_2_0(package, tmp_path):
    package("2.0")
    import opensora.models.mmdit.model as mmdit
    import opensora.utils.ckpt as ckpt
    from opensora.registry import MODELS

    state = {k: v.clone() for k, v in build(STDiT3, 3).state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "nested.pt")  # a wrapped .pt: 2.0 fills nothing
    model = MODELS.get("flux")(from_pretrained=str(tmp_path / "nested.pt"), device_map="cpu")
    assert not torch.equal(model.final_layer.linear.weight, state["final_layer.linear.weight"].bfloat16())

    with shim.installed() as names:
        assert names == ["opensora.models.mmdit.model.load_checkpoint", "opensora.utils.ckpt.load_checkpoint"]
        assert (
            ckpt.load_checkpoint is shim.load_checkpoint_v2
            and mmdit.load_checkpoint is shim.load_checkpoint_v2
        )
        model = MODELS.get("flux")(from_pretrained=str(tmp_path / "nested.pt"), device_map="cpu")
    assert model.final_layer.linear.weight.dtype == torch.bfloat16
    assert torch.equal(model.final_layer.linear.weight, state["final_layer.linear.weight"].bfloat16())
    assert ckpt.load_checkpoint is not shim.load_checkpoint_v2


def test_install_without_open_sora(monkeypatch):
    monkeypatch.setitem(sys.modules, "opensora", None)  # import opensora -> ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match="opensora"):
        shim.install()
