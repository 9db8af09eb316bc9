"""docs/guides/wan.md's blocks that need Wan installed, run as written (nox -s conformance).

tests/test_docs_snippets.py runs every other README/docs block; the ones its ``SETUP`` marks
``conformance="wan"`` run here, each in a fresh process that imports Wan as the other conformance
tests do (tests/conformance/_upstream.py: the CPU stubs) and shrinks Wan's UMT5 and 2.1 VAE to the
sizes of the ``wan_release`` checkpoints, as the ``tiny_wan`` fixture does (conftest.py), in a
directory holding what the guide names:

- ``Wan2.2-T2V-A14B/``: the release layout of Wan2.2 A14B (the T5 ``.pth``, ``google/umt5-xxl``,
  ``Wan2.1_VAE.pth``, the DiT experts in ``low_noise_model/`` and ``high_noise_model/``);
- ``liveavatar/models/wan/wan_2_2/``: the installed Wan package copied where Live Avatar vendors it
  (Live Avatar does not install; its vendored copy is Wan2.2's code). Wan's ``modules/t5.py`` calls
  ``torch.cuda.current_device()`` when imported (a default argument), so the prelude imports the
  copy's T5 module under the same CPU stub as ``import_upstream`` does for ``wan``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import wan

from tests.test_docs_snippets import conformance_blocks, run_block

BLOCKS = conformance_blocks("wan")
PRELUDE = """
import torch
from tests.conformance._upstream import cpu_attention, import_upstream
import_upstream()
import wan.modules.model, wan.modules.t5, wan.modules.vae2_1
from tests.conformance.wan.conftest import TinyWanVAE21, tiny_umt5_xxl
wan.modules.t5.umt5_xxl = tiny_umt5_xxl  # the checkpoints' tiny sizes (the tiny_wan fixture)
wan.modules.vae2_1.WanVAE_ = TinyWanVAE21
wan.modules.model.flash_attention = cpu_attention()
import importlib
current_device, torch.cuda.current_device = torch.cuda.current_device, lambda: "cpu"
vendored_t5 = importlib.import_module("liveavatar.models.wan.wan_2_2.modules.t5")
torch.cuda.current_device = current_device
"""
#: After a block: what it loaded are Wan's own objects, or the vendored copy is patched.
CHECKS = {
    "docs/guides/wan.md-1": """
assert type(text_encoder.model) is wan.modules.t5.T5Encoder, type(text_encoder.model)
assert next(text_encoder.model.parameters()).dtype == torch.bfloat16  # config.t5_dtype
assert type(low_noise_model) is wan.modules.model.WanModel and type(vae.model) is TinyWanVAE21
""",
    "docs/guides/wan.md-3": """
assert vendored_t5.T5EncoderModel.__init__.__module__.startswith("ckptkit.shims.wan")
assert not wan.modules.t5.T5EncoderModel.__init__.__module__.startswith("ckptkit")
""",
}


def test_the_guide_has_blocks_for_this_session() -> None:
    assert BLOCKS, "tests/test_docs_snippets.py marks no block conformance='wan'"


@pytest.mark.parametrize(("snippet", "setup"), BLOCKS, ids=[f"{s.page}-{s.number}" for s, _ in BLOCKS])
def test_guide_block_runs(snippet, setup, wan_release: dict[str, Path], tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    a14b = cwd / "Wan2.2-T2V-A14B"
    shutil.copytree(wan_release["wan22"], a14b, ignore=shutil.ignore_patterns("Wan2.2_VAE.pth"))
    shutil.copy(wan_release["wan21"] / "Wan2.1_VAE.pth", a14b)  # A14B ships the 2.1 VAE
    vendored = cwd / "liveavatar" / "models" / "wan"
    shutil.copytree(
        Path(wan.__file__).parent, vendored / "wan_2_2", ignore=shutil.ignore_patterns("__pycache__")
    )
    for package in (vendored, vendored.parent, vendored.parent.parent):
        (package / "__init__.py").write_text("")
    (tmp_path / "home").mkdir()
    run_block(
        snippet, setup, tmp_path, cwd, prelude=PRELUDE, checks=CHECKS[f"{snippet.page}-{snippet.number}"]
    )
