"""ckptkit.shims.wan in Live Avatar: its vendored Wan2.2 copy, its own DiT class, its VAE's dtype.

Live Avatar (Alibaba-Quark/LiveAvatar) vendors Wan2.2 as ``liveavatar.models.wan.wan_2_2`` (relative
imports inside) with one loader change: its ``Wan2_1_VAE`` casts the model to ``dtype``; and it loads
its DiT, ``CausalWanModel_S2V`` (no class of the vendored package), with ``from_pretrained``. Here
the vendored package is a copy of the installed ``wan`` with Live Avatar's ``Wan2_1_VAE`` put in
(tests/conformance/wan/_upstream_liveavatar.py, which names the commit), and its pipeline's loading
lines run as they are, once on its own loaders and once under ``install()``.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import shutil
import sys
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ckptkit.shims import wan as shim
from ckptkit.shims.wan import _t5 as shim_t5
from tests.conformance.wan import _upstream_liveavatar as liveavatar
from tests.conformance.wan.conftest import TINY_UMT5, wan_model, wan_s2v, wan_t5
from tests.conformance.wan.test_wan import assert_same_module

PACKAGE = "vendor_pkg.wan_2_2"


class CausalWanModel_S2V(wan_s2v.WanModel_S2V):
    """A DiT class of the loading kind of Live Avatar's (a diffusers ModelMixin outside the vendored package).

    Live Avatar's own cannot be built on a CPU machine (its ``__init__`` puts ``freqs`` on CUDA).
    """


@pytest.fixture
def vendored(tiny_wan, tmp_path, monkeypatch):
    """The installed wan copied as ``vendor_pkg.wan_2_2``, with Live Avatar's Wan2_1_VAE, at tiny sizes."""
    vendor = tmp_path / "vendor_pkg"
    shutil.copytree(Path(wan_model.__file__).parents[1], vendor / "wan_2_2")
    (vendor / "__init__.py").write_text("")
    vae_file = vendor / "wan_2_2" / "modules" / "vae2_1.py"
    vae_file.write_text(vae_file.read_text() + "\n\n" + inspect.getsource(liveavatar.Wan2_1_VAE))
    monkeypatch.syspath_prepend(str(tmp_path))
    with monkeypatch.context() as during_import:
        during_import.setattr(torch.cuda, "current_device", lambda: "cpu")  # Wan's T5 default argument
        modules = SimpleNamespace(
            t5=importlib.import_module(f"{PACKAGE}.modules.t5"),
            model=importlib.import_module(f"{PACKAGE}.modules.model"),
            vae2_1=importlib.import_module(f"{PACKAGE}.modules.vae2_1"),
            fsdp=importlib.import_module(f"{PACKAGE}.distributed.fsdp"),
        )
    t5 = modules.t5
    monkeypatch.setattr(t5, "umt5_xxl", lambda **kw: t5._t5("umt5-xxl", **{**TINY_UMT5, **kw}))
    tiny_vae = type("TinyWanVAE_", (modules.vae2_1.WanVAE_,), {"__init__": _tiny_vae_init})
    monkeypatch.setattr(modules.vae2_1, "WanVAE_", tiny_vae)
    yield modules
    for name in [n for n in sys.modules if n.startswith("vendor_pkg")]:
        del sys.modules[name]


def _tiny_vae_init(self, **cfg):
    super(type(self), self).__init__(**{**cfg, "dim": 8})


def _load(checkpoint_dir: Path, modules: SimpleNamespace) -> SimpleNamespace:
    """Live Avatar's WanS2V.__init__ loading lines, on the CPU, with its imports from the vendored package."""
    config = SimpleNamespace(
        param_dtype=torch.bfloat16,
        text_len=8,
        t5_dtype=torch.bfloat16,
        t5_checkpoint="models_t5_umt5-xxl-enc-bf16.pth",
        t5_tokenizer="google/umt5-xxl",
        vae_checkpoint="Wan2.1_VAE.pth",
    )
    pipeline = SimpleNamespace(device=torch.device("cpu"))
    liveavatar.load_models(
        pipeline,
        config,
        str(checkpoint_dir),
        device_id=0,
        t5_fsdp=False,
        dit_fsdp=False,
        shard_model=modules.fsdp.shard_model,
        partial=partial,
        T5EncoderModel=modules.t5.T5EncoderModel,
        Wan2_1_VAE=modules.vae2_1.Wan2_1_VAE,
        CausalWanModel_S2V=CausalWanModel_S2V,
    )
    return pipeline


def test_live_avatar_loading_lines_on_ckptkit(vendored, wan_release):
    root = wan_release["s2v"]  # Live Avatar loads Wan2.2-S2V-14B's directory
    theirs = _load(root, vendored)
    assert theirs.vae.model.conv1.weight.dtype == torch.bfloat16  # Live Avatar's VAE change, in effect
    wan_t5_init = vars(wan_t5.T5EncoderModel)["__init__"]
    with shim.installed(package=PACKAGE, dit_classes=[CausalWanModel_S2V]):
        assert vars(wan_t5.T5EncoderModel)["__init__"] is wan_t5_init  # the wan package itself untouched
        assert vendored.t5.T5EncoderModel.__init__ is shim_t5._t5_init
        assert vendored.vae2_1._video_vae.__module__ == "ckptkit.shims.wan._vae"
        assert "from_pretrained" in vars(CausalWanModel_S2V)
        assert "from_pretrained" not in vars(wan_s2v.WanModel_S2V)
        ours = _load(root, vendored)
    assert "from_pretrained" not in vars(CausalWanModel_S2V)
    assert vars(vendored.t5.T5EncoderModel)["__init__"] is not shim_t5._t5_init
    assert_same_module(ours.text_encoder.model, theirs.text_encoder.model)
    assert_same_module(ours.vae.model, theirs.vae.model)
    assert all(torch.equal(a, b) for a, b in zip(ours.vae.scale, theirs.vae.scale, strict=True))
    assert type(ours.noise_model) is CausalWanModel_S2V
    assert_same_module(ours.noise_model, theirs.noise_model)
    assert torch.equal(ours.noise_model.freqs, theirs.noise_model.freqs)
    video = torch.randn(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        latents = [copy.deepcopy(p.vae.model).float().encode(video, p.vae.scale) for p in (ours, theirs)]
    assert torch.equal(latents[0], latents[1])
    # the shim's own Wan2_1_VAE is Wan's (float32 model): Live Avatar's cast needs install(package=)
    wan_vae = shim.Wan2_1_VAE(vae_pth=str(root / "Wan2.1_VAE.pth"), device="cpu", dtype=torch.bfloat16)
    assert wan_vae.model.conv1.weight.dtype == torch.float32


def test_install_into_the_vendored_copy_for_wans_own_classes(vendored, wan_release):
    root = wan_release["wan21"]
    t5_kwargs = {
        "text_len": 8,
        "device": "cpu",
        "checkpoint_path": str(root / "models_t5_umt5-xxl-enc-bf16.pth"),
        "tokenizer_path": str(root / "google" / "umt5-xxl"),
    }
    reference_t5 = vendored.t5.T5EncoderModel(**t5_kwargs).model
    reference_dit = vendored.model.WanModel.from_pretrained(
        root, torch_dtype=torch.bfloat16, device_map="cpu"
    )
    with shim.installed(package=PACKAGE):
        assert_same_module(vendored.t5.T5EncoderModel(**t5_kwargs).model, reference_t5)
        ours = vendored.model.WanModel.from_pretrained(root, torch_dtype=torch.bfloat16, device_map="cpu")
        assert_same_module(ours, reference_dit)
    with pytest.raises(TypeError, match="dit_classes"):
        shim.install(package=PACKAGE, dit_classes=[object()])
    assert not shim._install._PATCHES.installed
