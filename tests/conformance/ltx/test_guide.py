"""docs/guides/ltx-video.md's blocks that need LTX-Video installed, run as written (nox -s conformance).

tests/test_docs_snippets.py runs every other README/docs block; the ones its ``SETUP`` marks
``conformance="ltx"`` run here, each in a fresh process that imports LTX-Video as the other
conformance tests do (tests/conformance/_upstream.py: the CPU stubs), in a directory holding what
the guide names: the tiny release file of ``ltx_release`` (conftest.py) under the release's name, and
the text encoder repo in the hub cache under HOME, with HF_HUB_OFFLINE=1. No GPU in CI: the blocks'
``device="cuda"`` is the CPU (``SETUP``'s ``replace``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests._hub import make_hub_cache
from tests.test_docs_snippets import conformance_blocks, run_block

BLOCKS = conformance_blocks("ltx")
PRELUDE = "from tests.conformance._upstream import import_upstream\nimport_upstream()\n"
#: After a block: what it built is LTX-Video's pipeline, and LTX-Video's loaders are its own again.
CHECKS = """
import ltx_video.inference
from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline

assert isinstance(pipeline, LTXVideoPipeline), type(pipeline)
assert ltx_video.inference.create_ltx_video_pipeline.__module__ == "ltx_video.inference"
"""


def test_the_guide_has_blocks_for_this_session() -> None:
    assert BLOCKS, "tests/test_docs_snippets.py marks no block conformance='ltx'"


@pytest.mark.parametrize(("snippet", "setup"), BLOCKS, ids=[f"{s.page}-{s.number}" for s, _ in BLOCKS])
def test_guide_block_runs(snippet, setup, ltx_release: dict[str, Path], tmp_path: Path) -> None:
    cwd = tmp_path / "work"
    cwd.mkdir()
    shutil.copy(ltx_release["bf16"], cwd / "ltxv-2b-0.9.8-distilled.safetensors")
    make_hub_cache(
        ltx_release["text_encoder_repo"],
        tmp_path / "home" / ".cache" / "huggingface" / "hub",
        repo_id="PixArt-alpha/PixArt-XL-2-1024-MS",
    )
    run_block(snippet, setup, tmp_path, cwd, prelude=PRELUDE, checks=CHECKS)
