from __future__ import annotations

from tests.conformance._example import run_example


def test_migrate_wan_example_runs(tmp_path):
    out = run_example("migrate_wan.py", tmp_path)
    assert "load_dit -> WanModel torch.float32" in out
    assert "installed(): WanModel.from_pretrained -> WanModel" in out
    assert "same VAE weights both ways: True" in out
