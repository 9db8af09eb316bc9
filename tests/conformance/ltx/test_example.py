from __future__ import annotations

from tests.conformance._example import run_example


def test_migrate_ltx_example_runs(tmp_path):
    out = run_example("migrate_ltx.py", tmp_path)
    assert "create_ltx_video_pipeline -> LTXVideoPipeline" in out
    assert "same transformer weights both ways: True" in out
    assert "LTX-Video's own loader is back: True" in out
    assert "create_latent_upsampler -> LatentUpsampler same both ways: True" in out
