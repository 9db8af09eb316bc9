"""resave's safety: atomic output, in-place re-shard, stale files, crashes, locks, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from ckptkit import (
    CorruptCheckpointError,
    DestinationExistsError,
    IncompleteCheckpointError,
    UnsafeCheckpointError,
    resave,
)
from tests.test_resave import assert_same_tensors, checksums, safetensors_state, t5_output, vae_output

ROOT = Path(__file__).resolve().parents[1]


def test_existing_destination_needs_overwrite(layouts, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DestinationExistsError, match="overwrite=True"):
        resave(layouts["t5_sharded"], out)
    assert sorted(os.listdir(out)) == ["keep.txt"]
    # An empty directory holds nothing to lose.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resave(layouts["t5_sharded"], empty, max_shard_size=None).path == empty


def test_reshard_in_place_replaces_only_the_same_set(layout_copy, layouts):
    directory = layout_copy("t5_variants")
    fp16_before = {p.name: p.read_bytes() for p in directory.glob("*fp16*")}
    state = safetensors_state(layouts["t5_variants"], "model-*.safetensors")
    with pytest.raises(DestinationExistsError):
        resave(directory, directory, max_shard_size=None)
    ckpt = resave(directory, directory, max_shard_size=None, overwrite=True)
    names = sorted(os.listdir(directory))
    assert "model.safetensors" in names
    assert not [n for n in names if n.startswith("model-0000") or n == "model.safetensors.index.json"]
    # the other variant and the config stay, byte for byte
    assert {p.name: p.read_bytes() for p in directory.glob("*fp16*")} == fp16_before
    assert (directory / "config.json").is_file()
    assert ckpt.weight_files == [directory / "model.safetensors"]
    assert_same_tensors(safetensors_state(directory, "model.safetensors"), state)
    assert torch.equal(t5_output(directory), t5_output(layouts["t5_variants"]))
    assert not [p for p in directory.parent.iterdir() if ".ckptkit-" in p.name]


def test_unsharded_resave_removes_a_stale_index(layout_copy, layouts):
    # diffusers#8898: an index left beside a newer single file makes loaders read the old shards.
    directory = layout_copy("vae_variants")
    resave(directory, directory, max_shard_size=None, overwrite=True)
    names = sorted(os.listdir(directory))
    assert "diffusion_pytorch_model.safetensors.index.json" not in names
    assert "diffusion_pytorch_model.safetensors.index.fp16.json" in names  # other variant kept
    assert torch.equal(vae_output(directory), vae_output(layouts["vae_variants"]))


def test_legacy_variant_names_become_current(layout_copy, layouts):
    directory = layout_copy("vae_legacy")
    resave(directory, directory, variant="fp16", max_shard_size="40KB", overwrite=True)
    names = sorted(os.listdir(directory))
    assert "diffusion_pytorch_model.safetensors.fp16.index.json" not in names
    assert not [n for n in names if n.endswith(".fp16.safetensors") and "-of-" in n]
    assert "diffusion_pytorch_model.safetensors.index.fp16.json" in names
    assert torch.equal(
        vae_output(directory, variant="fp16"), vae_output(layouts["vae_legacy"], variant="fp16")
    )


def test_adding_a_variant_in_place_keeps_the_default(layout_copy, layouts):
    directory = layout_copy("t5_sharded")
    before = checksums(directory)
    resave(directory, directory, variant="fp16", max_shard_size=None, overwrite=True)
    after = checksums(directory)
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(set(after) - set(before)) == ["model.fp16.safetensors"]
    assert torch.equal(t5_output(directory), t5_output(layouts["t5_sharded"]))


def test_links_in_the_source_are_copied_as_files(layouts, tmp_path):
    src = tmp_path / "linked"
    src.mkdir()
    for path in layouts["t5_sharded"].iterdir():
        (src / path.name).symlink_to(path)
    ckpt = resave(src, tmp_path / "out", max_shard_size=None)
    assert not [p for p in ckpt.path.rglob("*") if p.is_symlink()]
    assert (ckpt.path / "config.json").read_bytes() == (layouts["t5_sharded"] / "config.json").read_bytes()


def test_confine_refuses_links_out_of_the_checkpoint(layouts, tmp_path):
    src = tmp_path / "linked"
    src.mkdir()
    for path in layouts["t5_single"].iterdir():
        (src / path.name).symlink_to(path)
    with pytest.raises(UnsafeCheckpointError, match="outside the checkpoint"):
        resave(src, tmp_path / "out", confine=True)
    assert not (tmp_path / "out").exists()


def test_broken_sources_raise_typed_errors_and_write_nothing(layout_copy, tmp_path):
    truncated = layout_copy("t5_single")
    with open(truncated / "model.safetensors", "r+b") as handle:
        handle.truncate(os.path.getsize(truncated / "model.safetensors") - 10)
    with pytest.raises(CorruptCheckpointError, match=r"model\.safetensors"):
        resave(truncated, tmp_path / "a")
    missing = layout_copy("t5_sharded")
    (missing / "model-00002-of-00005.safetensors").unlink()
    with pytest.raises(IncompleteCheckpointError, match="missing"):
        resave(missing, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if ".ckptkit-" in p.name]


def test_pipeline_without_weights_is_refused(tmp_path):
    from ckptkit import CheckpointNotFoundError

    pipeline = tmp_path / "pipe"
    (pipeline / "scheduler").mkdir(parents=True)
    (pipeline / "model_index.json").write_text('{"_class_name": "X", "scheduler": ["diffusers", "S"]}')
    with pytest.raises(CheckpointNotFoundError, match="no component"):
        resave(pipeline, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_inside_source_is_refused(layout_copy):
    directory = layout_copy("t5_single")
    with pytest.raises(ValueError, match="inside"):
        resave(directory, directory / "sub")


def test_bad_arguments(layouts, tmp_path):
    with pytest.raises(ValueError, match="size"):
        resave(layouts["t5_single"], tmp_path / "a", max_shard_size="ten")
    with pytest.raises(ValueError, match="positive"):
        resave(layouts["t5_single"], tmp_path / "a", max_shard_size=0)
    with pytest.raises(ValueError, match="dtype"):
        resave(layouts["t5_single"], tmp_path / "a", dtype="fp13")


# -- crashes -----------------------------------------------------------------------------------

# The child pauses inside the writer once the first shard is complete, so the parent can kill it
# mid-resave at a known point.
_CHILD = textwrap.dedent(
    """
    import os, sys, time
    import ckptkit.io.writer as writer
    from ckptkit import resave

    original = writer.ShardWriter.write
    def write(self, shard):
        path = original(self, shard)
        open(sys.argv[3], "w").close()
        time.sleep(600)
        return path
    writer.ShardWriter.write = write
    resave(sys.argv[1], sys.argv[2], max_shard_size="30KB", overwrite=True)
    """
)


def _start_paused_resave(src: Path, dst: Path, flag: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(src), str(dst), str(flag)], env=env)
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert child.poll() is None, "the child resave ended before pausing"
        assert time.monotonic() < deadline, "the child resave never reached its first shard"
        time.sleep(0.05)
    return child


def test_sigkill_mid_resave_leaves_no_destination(layouts, tmp_path):
    dst = tmp_path / "out"
    child = _start_paused_resave(layouts["t5_sharded"], dst, tmp_path / "flag")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not dst.exists()
    leftovers = [p for p in tmp_path.iterdir() if ".ckptkit-tmp-" in p.name]
    assert leftovers, "the half-written output should be in the hidden staging directory"
    # The next run cleans up and succeeds.
    ckpt = resave(layouts["t5_sharded"], dst, max_shard_size=None)
    assert [p.name for p in ckpt.weight_files] == ["model.safetensors"]
    assert not [p for p in tmp_path.iterdir() if ".ckptkit-tmp-" in p.name]


def test_sigkill_mid_overwrite_leaves_the_old_destination(layout_copy, layouts, tmp_path):
    dst = layout_copy("t5_single")
    before = checksums(dst)
    child = _start_paused_resave(layouts["t5_sharded"], dst, tmp_path / "flag")
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert checksums(dst) == before


def test_second_resave_waits_for_the_first(layouts, tmp_path):
    dst = tmp_path / "out"
    child = _start_paused_resave(layouts["t5_sharded"], dst, tmp_path / "flag")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = "import sys; from ckptkit import resave; resave(sys.argv[1], sys.argv[2], max_shard_size=None, overwrite=True)"
    second = subprocess.Popen([sys.executable, "-c", code, str(layouts["t5_sharded"]), str(dst)], env=env)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            second.wait(timeout=3)  # blocked on the lock the paused resave holds
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert second.wait(timeout=120) == 0
    assert sorted(os.listdir(dst)) == ["config.json", "model.safetensors"]


_CHILD_SWAP = textwrap.dedent(
    """
    import os, sys, time
    import ckptkit.io.atomic as atomic
    from ckptkit import resave

    atomic._exchange = lambda a, b: False  # as on a filesystem without RENAME_EXCHANGE
    calls = []
    real_rename = os.rename
    def rename(a, b):
        calls.append((a, b))
        real_rename(a, b)
        if len(calls) == 1 and str(b) != sys.argv[2]:
            open(sys.argv[3], "w").close()
            time.sleep(600)
    os.rename = rename
    resave(sys.argv[1], sys.argv[2], max_shard_size=None, overwrite=True)
    """
)


def test_sigkill_between_the_two_renames_is_undone_by_the_next_run(layout_copy, layouts, tmp_path):
    dst = layout_copy("t5_single")
    before = checksums(dst)
    flag = tmp_path / "flag"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD_SWAP, str(layouts["t5_sharded"]), str(dst), str(flag)], env=env
    )
    deadline = time.monotonic() + 120
    while not flag.exists():
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not dst.exists()  # the old directory is aside, the new one not yet in place
    with pytest.raises(DestinationExistsError):
        resave(layouts["t5_sharded"], dst)  # the next run first puts the old one back
    assert checksums(dst) == before


def test_peak_anonymous_memory_does_not_follow_the_model(tmp_path):
    from safetensors.torch import save_file

    src = tmp_path / "big"
    src.mkdir()
    # 96 MiB in 4 tensors: a reader that loaded a tensor or a file would show it.
    save_file(
        {f"w{i}": torch.ones(6 * 2**20) for i in range(4)},
        src / "model.safetensors",
        metadata={"format": "pt"},
    )
    code = textwrap.dedent(
        """
        import sys, threading, time
        from ckptkit import resave
        import ckptkit.save.resave, ckptkit.save.sources  # imports before the baseline

        def anon():
            for line in open("/proc/self/status"):
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
        base = peak = anon()
        done = False
        def sample():
            global peak
            while not done:
                peak = max(peak, anon())
                time.sleep(0.001)
        thread = threading.Thread(target=sample)
        thread.start()
        resave(sys.argv[1], sys.argv[2], max_shard_size="40MB", fsync=False)
        done = True
        thread.join()
        print(peak - base)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", code, str(src), str(tmp_path / "out")],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    growth = int(result.stdout.strip().splitlines()[-1])
    assert growth < 16 * 2**20, f"anonymous memory grew by {growth / 2**20:.1f} MiB"
