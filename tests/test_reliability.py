"""Reliability promises across verbs: links confined on request, SIGKILL at random points,
concurrent writers with a reader, and a full disk."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ckptkit import (
    CkptError,
    DiskFullError,
    UnsafeCheckpointError,
    inspect_checkpoint,
    load_sharded,
    materialize,
    resave,
    resolve_ckpt_dir,
    verify_checkpoint,
)
from ckptkit.errors import CheckpointNotFoundError
from tests.test_materialize import COMMIT, make_hub_cache

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _checksums(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if ".ckptkit-" in p.name]


def _big_checkpoint(directory: Path, megabytes: int = 32) -> dict[str, torch.Tensor]:
    """A plain safetensors checkpoint of about ``megabytes`` MB (1 MB tensors), made with save_file."""
    directory.mkdir(parents=True)
    generator = torch.Generator().manual_seed(0)
    tensors = {f"layer.{i}.weight": torch.randn(512, 512, generator=generator) for i in range(megabytes)}
    save_file(tensors, directory / "model.safetensors")
    (directory / "config.json").write_text('{"model_type": "toy"}')
    return tensors


# --- links: default follows them, confine refuses them before anything is read -------------------


@pytest.fixture
def linked_out(layouts, tmp_path) -> Path:
    """A checkpoint whose weights file is a link to a file outside it."""
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "config.json").write_bytes((layouts["t5_single"] / "config.json").read_bytes())
    os.symlink(layouts["t5_single"] / "model.safetensors", directory / "model.safetensors")
    return directory


def test_default_follows_outside_links_and_lists_them(linked_out, layouts, monkeypatch) -> None:
    monkeypatch.delenv("CKPTKIT_CONFINE", raising=False)
    ckpt = resolve_ckpt_dir(linked_out)
    assert ckpt.weight_files == [linked_out / "model.safetensors"]
    real = os.path.realpath(layouts["t5_single"] / "model.safetensors")
    assert verify_checkpoint(linked_out, progress=False).outside_links == [
        f"{linked_out / 'model.safetensors'} -> {real}"
    ]
    assert inspect_checkpoint(linked_out).ok


def _assert_every_verb_refuses(spec: Path, tmp_path: Path, **confine: bool) -> None:
    with pytest.raises(UnsafeCheckpointError, match="outside the checkpoint root"):
        resolve_ckpt_dir(spec, **confine)
    with pytest.raises(UnsafeCheckpointError):
        inspect_checkpoint(spec, **confine)
    with pytest.raises(UnsafeCheckpointError):
        verify_checkpoint(spec, progress=False, **confine)
    with pytest.raises(UnsafeCheckpointError):
        resave(spec, tmp_path / "resaved", progress=False, **confine)
    with pytest.raises(UnsafeCheckpointError):
        materialize(spec, tmp_path / "materialized", progress=False, **confine)
    with pytest.raises(UnsafeCheckpointError):
        load_sharded(spec, progress=False, **confine)
    assert not _leftovers(tmp_path) and not (tmp_path / "resaved").exists()
    assert not (tmp_path / "materialized").exists()


def test_confine_true_refuses_in_every_verb_before_reading(linked_out, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CKPTKIT_CONFINE", raising=False)
    opened: list[str] = []
    real_open = os.open

    def spying_open(path, *args, **kwargs):
        if str(path).endswith(".safetensors"):
            opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spying_open)
    _assert_every_verb_refuses(linked_out, tmp_path, confine=True)
    assert opened == [], "a weights file was opened before confinement refused it"


def test_confine_env_refuses_and_confine_false_overrides(linked_out, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CKPTKIT_CONFINE", "1")
    _assert_every_verb_refuses(linked_out, tmp_path)
    assert resolve_ckpt_dir(linked_out, confine=False).weight_files == [linked_out / "model.safetensors"]
    assert load_sharded(linked_out, confine=False, progress=False)


def test_confine_accepts_hub_blob_links_and_refuses_links_out_of_the_repo(layouts, tmp_path) -> None:
    repo = make_hub_cache(layouts["t5_single"], tmp_path / "hub", repo="models--org--t5")
    snapshot = repo / "snapshots" / COMMIT
    ckpt = resolve_ckpt_dir(snapshot, confine=True)  # links into models--org--t5/blobs are inside
    assert ckpt.root == repo
    weights = snapshot / "model.safetensors"
    weights.unlink()
    os.symlink(layouts["t5_single"] / "model.safetensors", weights)
    with pytest.raises(UnsafeCheckpointError, match="models--org--t5"):
        resolve_ckpt_dir(snapshot, confine=True)
    assert resolve_ckpt_dir(snapshot, confine=False).weight_files == [weights]


# --- SIGKILL at random points --------------------------------------------------------------------

_RESAVE_CHILD = textwrap.dedent(
    """
    import sys
    from ckptkit import resave
    print("ready", flush=True)
    resave(sys.argv[1], sys.argv[2], max_shard_size=sys.argv[3], overwrite=True, progress=False)
    print("done", flush=True)
    """
)


def _start_resave(src: Path, dst: Path, shard: str) -> subprocess.Popen:
    child = subprocess.Popen(
        [sys.executable, "-c", _RESAVE_CHILD, str(src), str(dst), shard],
        env=ENV,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "ready"
    return child


def test_sigkill_at_random_points_never_leaves_a_partial_destination(tmp_path) -> None:
    src = tmp_path / "src"
    tensors = _big_checkpoint(src, megabytes=32)
    source_sums = _checksums(src)
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "dst"
    # How long one child resave takes here (from "ready" to exit), so kills spread over the copy.
    child = _start_resave(src, tmp_path / "timing", "8MB")
    started = time.monotonic()
    assert child.wait() == 0
    duration = time.monotonic() - started
    if child.stdout is not None:
        child.stdout.close()
    reference = [p.name for p in resolve_ckpt_dir(tmp_path / "timing").weight_files]
    assert len(reference) > 1
    rng = random.Random(20240909)
    outcomes = {"absent": 0, "previous": 0, "complete": 0, "killed mid-copy": 0}
    for trial in range(20):
        previous: dict[str, str] | None = None
        if dst.exists():
            shutil.rmtree(dst)
        if trial % 2:  # every other trial overwrites an existing previous version
            resave(src, dst, max_shard_size=None, overwrite=True, progress=False)
            previous = _checksums(dst)
        child = _start_resave(src, dst, "8MB")
        if trial >= 16:
            # A kill that lands after the commit, whatever the machine's load did to the timing.
            child.wait()
        else:
            time.sleep(rng.uniform(0, duration * 1.4))
        child.send_signal(signal.SIGKILL)
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
        staged = [p for p in out.iterdir() if ".ckptkit-tmp-" in p.name]
        if any(f.stat().st_size for d in staged for f in d.iterdir()):
            outcomes["killed mid-copy"] += 1
        if not dst.exists():
            assert previous is None, f"trial {trial}: the previous version vanished"
            outcomes["absent"] += 1
        elif previous is not None and _checksums(dst) == previous:
            outcomes["previous"] += 1
        else:
            report = verify_checkpoint(dst, progress=False)
            assert report.ok, (trial, report.problems)
            ckpt = resolve_ckpt_dir(dst)
            assert [p.name for p in ckpt.weight_files] == reference, f"trial {trial}"
            loaded: dict[str, torch.Tensor] = {}
            for path in ckpt.weight_files:
                loaded.update(load_file(path))
            assert loaded.keys() == tensors.keys()
            assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
            outcomes["complete"] += 1
        # The next run removes whatever the killed one left next to dst.
        resave(src, dst, max_shard_size=None, overwrite=True, progress=False)
        assert not _leftovers(out), f"trial {trial}: {_leftovers(out)}"
        assert verify_checkpoint(dst, progress=False).ok
    assert _checksums(src) == source_sums
    # The kills must have landed both before the commit and mid-copy at least sometimes.
    assert outcomes["killed mid-copy"] > 0 and outcomes["complete"] > 0, outcomes
    print("kill outcomes:", outcomes)


# --- two writers and a reader --------------------------------------------------------------------


def test_two_concurrent_resaves_and_a_reader_never_see_a_partial_checkpoint(tmp_path) -> None:
    src = tmp_path / "src"
    tensors = _big_checkpoint(src, megabytes=16)
    dst = tmp_path / "out" / "dst"
    dst.parent.mkdir()
    writers = [_start_resave(src, dst, "4MB") for _ in range(2)]
    reads = complete_reads = 0
    deadline = time.monotonic() + 180  # a hang guard, not a speed check
    while any(w.poll() is None for w in writers) or reads < 3:
        assert time.monotonic() < deadline, "the writers did not finish"
        reads += 1
        try:
            ckpt = resolve_ckpt_dir(dst)
        except CheckpointNotFoundError:
            assert not dst.exists() or complete_reads == 0
            continue
        loaded: dict[str, torch.Tensor] = {}
        for path in ckpt.weight_files:
            loaded.update(load_file(path))
        assert loaded.keys() == tensors.keys(), sorted(loaded)
        assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
        complete_reads += 1
    for writer in writers:
        assert writer.stdout is not None
        assert writer.stdout.read().strip() == "done"
        writer.stdout.close()
        assert writer.wait() == 0
    assert complete_reads > 0
    assert verify_checkpoint(dst, progress=False).ok
    assert len(resolve_ckpt_dir(dst).weight_files) > 1
    assert not _leftovers(dst.parent)


# --- disk full ------------------------------------------------------------------------------------

_FULL_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from ckptkit import CkptError, materialize, resave

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
    resource.setrlimit(resource.RLIMIT_FSIZE, (4 * 2**20, 4 * 2**20))
    verb = resave if sys.argv[1] == "resave" else materialize
    try:
        verb(sys.argv[2], sys.argv[3], overwrite=True, progress=False)
    except CkptError as exc:
        print(type(exc).__name__)
        print(exc)
        sys.exit(3)
    print("no error")
    """
)


@pytest.mark.parametrize("verb", ["resave", "materialize"])
def test_disk_full_is_a_typed_error_and_keeps_the_old_output(tmp_path, verb) -> None:
    store = tmp_path / "store"
    _big_checkpoint(store, megabytes=8)
    src = tmp_path / "src"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "toy"}')
    # A link, so materialize copies bytes (it hard-links plain files, which takes no room).
    os.symlink(store / "model.safetensors", src / "model.safetensors")
    out = tmp_path / "out"
    out.mkdir()
    dst = out / "dst"
    dst.mkdir()
    (dst / "model.safetensors").write_bytes(b"old version")
    before = _checksums(dst)
    child = subprocess.run(
        [sys.executable, "-c", _FULL_CHILD, verb, str(src), str(dst)],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 3, child.stdout + child.stderr
    name, message = child.stdout.splitlines()[:2]
    assert name == DiskFullError.__name__ and issubclass(DiskFullError, CkptError)
    assert str(dst) in message and "Fix:" in message
    assert _checksums(dst) == before
    assert not _leftovers(out)
