"""An Open-Sora checkout as docs/guides/open-sora.md's reader has it, for tests/test_docs_snippets.py.

Open-Sora does not install (ColossalAI, CUDA-only kernels), so its guide's blocks run in a stand-in
checkout built here, at upstream's module paths:

- ``opensora/utils/ckpt_utils.py`` (1.3) and ``opensora/utils/ckpt.py`` (2.0) are the text of the
  vendored upstream loaders, ``tests/conformance/opensora/_upstream_v13.py`` / ``_upstream_v2.py``
  (verbatim copies of Open-Sora's functions; only their imports differ), so ``install()`` patches
  upstream's own code;
- ``opensora/registry.py`` is the part of Open-Sora's registry the builders use (``MODELS``, whose
  ``opensora.models`` location registers the models on first use, and ``build_module``: mmengine's
  ``Registry.build`` pops ``type`` and calls the registered builder);
- ``opensora/models/stdit/stdit3.py`` registers ``STDiT3-XL/2`` as upstream's does (``load_checkpoint``
  imported by name), building the tiny STDiT3 of ``tests/conformance/opensora/_tiny.py``;
- ``scripts/inference.py`` stands in for upstream's script: it reads the config named on its
  command line (``--prompt`` as upstream's parser takes it) and builds the model through the
  registry, which is the loading part of upstream's script; it prints what it loaded.

The checkpoints the guide names are tiny stand-ins in the release formats (``_tiny.py``): the model
the guide's ``model`` stands for is a 16-channel STDiT3 (Open-Sora 1.3 with its 16-channel VAE),
so every file but the 4-channel ``ckpt_path`` one (widened by ``adapt_16ch=True``) has 16 channels.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch
from safetensors.torch import save_file

from tests.conformance.opensora._tiny import PixArt, STDiT3, build, save_booster, trained

UPSTREAM = Path(__file__).parent / "conformance" / "opensora"
CHANNELS = 16
#: The names the guide's blocks use for their context (what the page's prose says the reader has).
PRELUDE = (
    "import os\n"
    "from tests.conformance.opensora._tiny import STDiT3\n"
    f"model = STDiT3(in_channels={CHANNELS})\n"
    "ckpt_path = './stdit3-4ch.pt'\n"
    "cache_dir = os.path.expanduser('~/.cache/huggingface/hub')\n"
    "prompts = ['a cat on a mat', 'a red dog']\n"
)

REGISTRY = """
import copy
import importlib


class Registry:  # the part of mmengine.registry.Registry that Open-Sora's builders use
    def __init__(self, name, locations=()):
        self.name = name
        self.locations = locations  # imported on first use: the modules that register
        self._module_dict = {}

    def register_module(self, name):
        def register(obj):
            self._module_dict[name] = obj
            return obj

        return register

    def get(self, name):
        for location in self.locations:
            importlib.import_module(location)
        return self._module_dict[name]

    def build(self, cfg):
        cfg = dict(cfg)
        return self.get(cfg.pop("type"))(**cfg)


def build_module(module, builder, **kwargs):  # opensora/registry.py
    if isinstance(module, dict):
        cfg = copy.deepcopy(module)
        cfg.update(kwargs)
        return builder.build(cfg)
    if module is None:
        return None
    return module


MODELS = Registry("model", locations=["opensora.models"])
"""

STDIT3 = """
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

INFERENCE = """
# Stands in for Open-Sora's scripts/inference.py (tests/_opensora_repo.py): its config and its
# model building, which is where the weights are loaded.
import argparse
import runpy

from opensora.registry import MODELS, build_module

parser = argparse.ArgumentParser()
parser.add_argument("config")
parser.add_argument("--prompt", nargs="+")
args = parser.parse_args()
cfg = runpy.run_path(args.config)
model = build_module(cfg["model"], MODELS)

from opensora.models.stdit import stdit3  # noqa: E402  (a check of the stand-in's own)

assert stdit3.load_checkpoint.__module__.startswith("ckptkit."), stdit3.load_checkpoint.__module__
print(f"built {type(model).__name__} through {stdit3.load_checkpoint.__module__}; prompt: {args.prompt}")
"""

T2V_CONFIG = """
model = dict(type="STDiT3-XL/2", from_pretrained="./stdit3-4ch.pt", adapt_16ch=True, in_channels=16)
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def build_opensora_repo(root: Path) -> dict[str, Path]:
    """Writes the checkout into ``root``; returns the hub repos to put in the cache (repo id -> dir)."""
    _write(
        root,
        {
            "opensora/__init__.py": "",
            "opensora/registry.py": REGISTRY,
            "opensora/utils/__init__.py": "",
            "opensora/utils/ckpt_utils.py": (UPSTREAM / "_upstream_v13.py").read_text(),
            "opensora/utils/ckpt.py": (UPSTREAM / "_upstream_v2.py").read_text(),
            "opensora/models/__init__.py": "from .stdit import stdit3  # noqa: F401\n",
            "opensora/models/stdit/__init__.py": "",
            "opensora/models/stdit/stdit3.py": STDIT3,
            "scripts/inference.py": INFERENCE,
            "configs/opensora-v1-3/inference/t2v.py": T2V_CONFIG,
        },
    )
    # a PixArt-Sigma release: nested under "state_dict", a Conv2d patch embedding, 4-token captions
    sigma = {
        k: v.clone() for k, v in build(PixArt, 1, caption_len=4, in_channels=CHANNELS).state_dict().items()
    }
    sigma["x_embedder.proj.weight"] = sigma["x_embedder.proj.weight"].squeeze(2)
    (root / "pretrained_models").mkdir()
    torch.save({"state_dict": sigma}, root / "pretrained_models" / "PixArt-Sigma-XL-2-2K-MS.pth")
    torch.save(trained(STDiT3, seed=2, in_channels=4), root / "stdit3-4ch.pt")  # for adapt_16ch=True
    save_booster(
        trained(STDiT3, seed=3, in_channels=CHANNELS),
        root / "outputs/0001-STDiT3-XL-2/epoch1-global_step2000",
    )

    repos = root.parent / "opensora-hub-repos"
    save_file(trained(STDiT3, seed=4, in_channels=CHANNELS), _mkdir(repos / "stdit-v3") / "model.safetensors")
    save_file(
        trained(STDiT3, seed=5, in_channels=CHANNELS), _mkdir(repos / "v2") / "Open_Sora_v2.safetensors"
    )
    return {"hpcai-tech/OpenSora-STDiT-v3": repos / "stdit-v3", "hpcai-tech/Open-Sora-v2": repos / "v2"}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True)
    return path
