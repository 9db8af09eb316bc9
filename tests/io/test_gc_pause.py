"""gc_paused: the collector is off inside a load and back as it was after, however the call ends."""

from __future__ import annotations

import gc

import pytest
import torch
from safetensors.torch import save_file

from ckptkit import load_sharded
from ckptkit.errors import CkptError
from ckptkit.io.gc_pause import gc_paused


def test_off_inside_and_restored_after_even_on_error():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled():
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_load_sharded_runs_without_the_collector_and_restores_it(tmp_path, monkeypatch):
    import ckptkit.load.sharded as sharded

    save_file({"a": torch.ones(3)}, tmp_path / "model.safetensors")
    seen = []
    real = sharded._load

    def spy(*args, **kwargs):
        seen.append(gc.isenabled())
        return real(*args, **kwargs)

    monkeypatch.setattr(sharded, "_load", spy)
    assert torch.equal(load_sharded(tmp_path)["a"], torch.ones(3))
    assert seen == [False] and gc.isenabled()
    (tmp_path / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(CkptError):
        load_sharded(tmp_path)
    assert gc.isenabled()
