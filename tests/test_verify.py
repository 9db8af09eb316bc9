"""verify_checkpoint and `ckptkit verify`: structure plus content, on hub-shaped copies of real saves."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ckptkit import UnsafeCheckpointError, verify_checkpoint, write_manifest
from ckptkit.errors import CheckpointNotFoundError, CorruptCheckpointError
from ckptkit.io.checksums import hash_file, read_manifest
from tests._hub import (
    COMMIT,
    blob_of,
    flip_byte,
    make_hub_cache,
    make_local_dir,
    run_cli,
    write_tree_listing,
)
from tests._subprocess import run_python


@pytest.fixture
def hub_t5(layouts, tmp_path) -> Path:
    """A hub cache snapshot of the sharded T5 (5 safetensors shards + index + config)."""
    return make_hub_cache(layouts["t5_sharded"], tmp_path / "hub")


def _errors(report) -> list[str]:
    return [p.message for p in report.problems if p.severity == "error"]


def _shards(directory: Path) -> list[Path]:
    return sorted(directory.glob("model-*.safetensors"))


def test_clean_hub_snapshot_verifies_every_file(hub_t5) -> None:
    report = verify_checkpoint(hub_t5, progress=False)
    assert report.ok, report.problems
    names = sorted(p.name for p in hub_t5.iterdir())
    assert sorted(report.verified) == names
    assert report.unverified == [] and report.outside_links == []
    algorithms = {f.name: f.expected[0]["algorithm"] for f in report.files}
    assert algorithms["config.json"] == "git-sha1"
    assert algorithms[_shards(hub_t5)[0].name] == "sha256"
    assert report.bytes_hashed == sum(p.stat().st_size for p in hub_t5.iterdir())


def test_flipped_byte_in_a_blob_is_found(hub_t5) -> None:
    shard = _shards(hub_t5)[1]
    flip_byte(blob_of(shard))
    report = verify_checkpoint(hub_t5, progress=False)
    assert not report.ok
    (message,) = _errors(report)
    assert message.startswith(f"{shard}: content damaged: sha256 is ")
    assert "\n" not in message and blob_of(shard).name in message
    assert [f.name for f in report.files if f.ok is False] == [shard.name]
    # The header is intact: only hashing can tell.
    assert verify_checkpoint(hub_t5, checksums=False, progress=False).ok


def test_changed_small_file_fails_its_git_blob_sha1(hub_t5) -> None:
    config = blob_of(hub_t5 / "config.json")
    config.write_text(config.read_text().replace('"d_model": 32', '"d_model": 33'))
    (message,) = _errors(verify_checkpoint(hub_t5, progress=False))
    assert message.startswith(f"{hub_t5 / 'config.json'}: content damaged: git-sha1 is ")


def test_truncated_shard_is_found(hub_t5) -> None:
    shard = _shards(hub_t5)[0]
    blob = blob_of(shard)
    os.truncate(blob, blob.stat().st_size - 10)
    report = verify_checkpoint(hub_t5, checksums=False, progress=False)
    assert any(p.kind == "CorruptCheckpointError" and p.path == str(shard) for p in report.problems), (
        report.problems
    )
    hashed = verify_checkpoint(hub_t5, progress=False)
    assert any(m.startswith(f"{shard}: content damaged") for m in _errors(hashed))


def test_missing_shard_is_found(hub_t5) -> None:
    shard = _shards(hub_t5)[2]
    shard.unlink()
    report = verify_checkpoint(hub_t5, progress=False)
    assert not report.ok
    missing = [p for p in report.problems if p.kind == "IncompleteCheckpointError"]
    assert missing and shard.name in missing[0].message
    assert missing[0].path == str(hub_t5 / "model.safetensors.index.json")


def test_dangling_link_is_found(hub_t5) -> None:
    shard = _shards(hub_t5)[0]
    blob_of(shard).unlink()
    report = verify_checkpoint(hub_t5, progress=False)
    dangling = [p for p in report.problems if p.path == str(shard)]
    assert dangling and "dangles" in dangling[0].message
    assert not report.ok


def test_damaged_unselected_variant_is_reported(layout_copy) -> None:
    directory = layout_copy("t5_variants")
    fp16_shard = sorted(directory.glob("model.fp16-*.safetensors"))[0]
    os.truncate(fp16_shard, fp16_shard.stat().st_size - 4)
    report = verify_checkpoint(directory, checksums=False)
    assert [p.path for p in report.problems if p.severity == "error"] == [str(fp16_shard)]


def test_local_dir_download_metadata(layouts, tmp_path) -> None:
    local = make_local_dir(layouts["pixart"], tmp_path / "pixart")
    report = verify_checkpoint(local, progress=False)
    assert report.ok and len(report.verified) == len(report.files) == 3
    assert report.files[0].expected[0]["source"].endswith(".metadata")
    weights = local / "diffusion_pytorch_model.fp16.safetensors"
    flip_byte(weights, offset_from_end=100)
    (message,) = _errors(verify_checkpoint(local, progress=False))
    assert message.startswith(f"{weights}: content damaged: sha256")
    assert "download metadata" in message


def test_manifest_round_trip_and_sha256sum_compatibility(layout_copy) -> None:
    directory = layout_copy("vae_variants")
    manifest = write_manifest(directory, progress=False)
    entries = read_manifest(manifest)
    assert entries == {
        p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in directory.iterdir()
        if p.name != "SHA256SUMS"
    }
    if shutil.which("sha256sum"):
        check = subprocess.run(
            ["sha256sum", "--quiet", "-c", "SHA256SUMS"], cwd=directory, capture_output=True
        )
        assert check.returncode == 0, check.stdout
    assert verify_checkpoint(directory, progress=False).ok

    shard = sorted(directory.glob("diffusion_pytorch_model-*.safetensors"))[0]
    flip_byte(shard)
    (message,) = _errors(verify_checkpoint(directory, progress=False))
    assert message.startswith(f"{shard}: content damaged: sha256") and "SHA256SUMS" in message

    shard.unlink()
    (directory / "notes.txt").write_text("added later")
    report = verify_checkpoint(directory, progress=False)
    assert any(m.startswith(f"{shard}: listed in {manifest} but missing.") for m in _errors(report))
    warnings = [p.message for p in report.problems if p.severity == "warning"]
    assert f"{directory / 'notes.txt'}: not listed in SHA256SUMS" in warnings


def test_malformed_manifest_is_a_problem_naming_it(layout_copy) -> None:
    directory = layout_copy("t5_single")
    (directory / "SHA256SUMS").write_text("not a digest  model.safetensors\n")
    report = verify_checkpoint(directory, progress=False)
    assert [p.kind for p in report.problems] == ["CorruptCheckpointError"]
    assert report.problems[0].path == str(directory / "SHA256SUMS")
    with pytest.raises(CorruptCheckpointError):
        read_manifest(directory / "SHA256SUMS")
    (directory / "SHA256SUMS").write_text(f"{'0' * 64}  ../escape.bin\n")
    with pytest.raises(CorruptCheckpointError, match="outside the directory"):
        read_manifest(directory / "SHA256SUMS")


def test_write_manifest_option_writes_only_when_ok(hub_t5) -> None:
    report = verify_checkpoint(hub_t5, write_manifest=True, progress=False)
    assert report.manifest_written == str(hub_t5 / "SHA256SUMS")
    assert set(read_manifest(hub_t5 / "SHA256SUMS")) == {p.name for p in hub_t5.iterdir()} - {"SHA256SUMS"}
    (hub_t5 / "SHA256SUMS").unlink()
    flip_byte(blob_of(_shards(hub_t5)[0]))
    report = verify_checkpoint(hub_t5, write_manifest=True, progress=False)
    assert not report.ok and report.manifest_written is None and not (hub_t5 / "SHA256SUMS").exists()


def test_links_outside_the_root_are_listed_and_confine_refuses(layouts, tmp_path) -> None:
    directory = tmp_path / "ckpt"
    directory.mkdir()
    shutil.copy(layouts["t5_single"] / "config.json", directory)
    os.symlink(layouts["t5_single"] / "model.safetensors", directory / "model.safetensors")
    report = verify_checkpoint(directory, progress=False)
    assert report.ok
    assert report.outside_links == [
        f"{directory / 'model.safetensors'} -> {os.path.realpath(layouts['t5_single'] / 'model.safetensors')}"
    ]
    with pytest.raises(UnsafeCheckpointError, match="outside the checkpoint root"):
        verify_checkpoint(directory, confine=True)


def test_single_file_spec_hashes_only_its_weight_set(layouts, tmp_path) -> None:
    local = make_local_dir(layouts["pixart"], tmp_path / "pixart")
    report = verify_checkpoint(local / "diffusion_pytorch_model.safetensors", progress=False)
    assert [f.name for f in report.files] == ["diffusion_pytorch_model.safetensors"]
    assert report.ok and report.verified == ["diffusion_pytorch_model.safetensors"]


def test_hashes_match_git_and_hashlib(layouts) -> None:
    config = layouts["t5_single"] / "config.json"
    digests = hash_file(config, ["sha256", "git-sha1"])
    assert digests["sha256"] == hashlib.sha256(config.read_bytes()).hexdigest()
    if shutil.which("git"):
        git = subprocess.run(["git", "hash-object", str(config)], capture_output=True, text=True, check=True)
        assert digests["git-sha1"] == git.stdout.strip()


def test_pipeline_snapshot_in_subfolders(layouts, tmp_path) -> None:
    snapshot = make_hub_cache(layouts["pipeline"], tmp_path / "hub", "org/pipe")
    report = verify_checkpoint(snapshot, progress=False)
    assert report.ok, report.problems
    assert any(name.startswith("vae/diffusion_pytorch_model.fp16") for name in report.verified)
    assert len(report.verified) == len(report.files)
    component = verify_checkpoint(snapshot, subfolder="transformer", progress=False)
    assert component.path == str(snapshot / "transformer") and component.ok


# -- through the real entry point ----------------------------------------------------------------


def test_cli_verify_human_and_json(hub_t5) -> None:
    human = run_cli("verify", str(hub_t5))
    assert human.returncode == 0, human.stderr
    assert human.stdout.startswith(f"OK: {hub_t5}: 7 files, 7 verified by hash")
    as_json = run_cli("verify", str(hub_t5), "--json")
    data = json.loads(as_json.stdout)
    assert as_json.returncode == 0 and data["ok"] is True and data["verified"] == 7
    assert {f["name"] for f in data["files"]} == {p.name for p in hub_t5.iterdir()}

    shard = _shards(hub_t5)[0]
    flip_byte(blob_of(shard))
    failed = run_cli("verify", str(hub_t5))
    assert failed.returncode == 1
    lines = failed.stdout.splitlines()
    assert lines[0].startswith(f"ERROR: {shard}: content damaged") and lines[-1].startswith(
        "FAILED (1 problem)"
    )
    data = json.loads(run_cli("verify", str(hub_t5), "--json").stdout)
    assert data["ok"] is False and data["problems"][0]["path"] == str(shard)
    assert run_cli("verify", str(hub_t5), "--no-checksums").returncode == 0


def test_cli_verify_write_manifest_then_check(layout_copy) -> None:
    directory = layout_copy("pixart")
    written = run_cli("verify", str(directory), "--write-manifest")
    assert written.returncode == 0 and f"wrote {directory / 'SHA256SUMS'}" in written.stdout
    assert "3 verified by hash" in run_cli("verify", str(directory)).stdout
    flip_byte(directory / "diffusion_pytorch_model.safetensors")
    assert run_cli("verify", str(directory)).returncode == 1


def test_cli_verify_errors_and_usage(tmp_path, layout_copy) -> None:
    missing = run_cli("verify", str(tmp_path / "nothing"))
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "CheckpointNotFoundError" in missing.stderr
    debug = run_cli("verify", str(tmp_path / "nothing"), "--debug")
    assert "Traceback (most recent call last)" in debug.stderr
    assert run_cli("verify").returncode == 2
    assert run_cli("verify", str(tmp_path), "--no-such-flag").returncode == 2
    directory = layout_copy("t5_single")
    os.symlink(directory / "model.safetensors", tmp_path / "elsewhere.safetensors")
    (directory / "model.safetensors").rename(tmp_path / "real.safetensors")
    os.symlink(tmp_path / "real.safetensors", directory / "model.safetensors")
    confined = run_cli("verify", str(directory), "--confine")
    assert confined.returncode == 1 and "UnsafeCheckpointError" in confined.stderr


def test_verify_never_imports_torch(hub_t5) -> None:
    code = (
        "import sys, ckptkit; r = ckptkit.verify_checkpoint(sys.argv[1], progress=False); "
        "assert r.ok; assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = run_python(code, str(hub_t5))
    assert result.returncode == 0, result.stderr


def test_no_symlink_cache_is_checked_against_the_tree_listing(layouts, tmp_path) -> None:
    # HF_HUB_DISABLE_SYMLINKS mode: real files in the snapshot, sizes and hashes only in trees/<commit>.json.
    repo = tmp_path / "hub" / "models--org--tiny"
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(layouts["t5_sharded"], snapshot)
    write_tree_listing(repo, {p.name: p for p in snapshot.iterdir()})
    report = verify_checkpoint(snapshot, progress=False)
    assert report.ok and len(report.verified) == len(report.files) == 7
    assert {e["source"] for f in report.files for e in f.expected} == {str(repo / "trees" / f"{COMMIT}.json")}

    shard = _shards(snapshot)[0]
    os.truncate(shard, shard.stat().st_size - 1)
    quick = verify_checkpoint(snapshot, checksums=False, progress=False)
    sizes = [p.message for p in quick.problems if "tree listing" in p.message]
    assert sizes == [
        f"{shard}: size is {shard.stat().st_size} bytes but the tree listing "
        f"({repo / 'trees' / f'{COMMIT}.json'}) says {shard.stat().st_size + 1}: truncated or replaced. "
        "Fix: delete the file and download it again"
    ]
    config = snapshot / "config.json"
    config.write_text(config.read_text().replace("32", "31"))
    assert any(
        m.startswith(f"{config}: content damaged: git-sha1") for m in _errors(verify_checkpoint(snapshot))
    )


def test_local_dir_tree_listing_sizes(layouts, tmp_path) -> None:
    local = make_local_dir(layouts["pixart"], tmp_path / "pixart")
    write_tree_listing(local / ".cache" / "huggingface", {p.name: p for p in local.iterdir() if p.is_file()})
    assert verify_checkpoint(local, checksums=False, progress=False).ok
    weights = local / "diffusion_pytorch_model.safetensors"
    with open(weights, "ab") as handle:
        handle.write(b"\0")
    report = verify_checkpoint(local, checksums=False, progress=False)
    assert {p.path for p in report.problems if p.severity == "error"} == {str(weights)}
    assert any("tree listing" in m and "says" in m for m in _errors(report))


def test_torch_zip_files_are_checked_against_their_crcs(layout_copy) -> None:
    import struct
    import zipfile

    directory = layout_copy("t5_bin")
    weights = directory / "pytorch_model.bin"
    report = verify_checkpoint(directory, progress=False)
    assert report.ok and "pytorch_model.bin" in report.verified  # no record needed: the zip holds CRCs
    with zipfile.ZipFile(weights) as archive:
        member = max(archive.infolist(), key=lambda i: i.file_size)
    with open(weights, "r+b") as handle:  # find the member's data after its local header, flip a byte
        handle.seek(member.header_offset)
        header = handle.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        handle.seek(member.header_offset + 30 + name_len + extra_len + member.file_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))
    (message,) = _errors(verify_checkpoint(directory, progress=False))
    assert message.startswith(
        f"{weights}: content damaged: zip member(s) {member.filename} fail their CRC-32"
    )
    assert verify_checkpoint(directory, checksums=False, progress=False).ok


def test_hub_repo_folder_stands_for_its_main_snapshot(hub_t5) -> None:
    repo = hub_t5.parents[1]
    report = verify_checkpoint(repo, progress=False)
    assert report.path == str(hub_t5) and report.root == str(repo) and report.ok
    assert len(report.verified) == 7
    with pytest.raises(CheckpointNotFoundError, match="revision 'v2'"):
        verify_checkpoint(repo, revision="v2")
    cli = run_cli("verify", str(repo), "--json")
    assert cli.returncode == 0 and json.loads(cli.stdout)["path"] == str(hub_t5)
    assert run_cli("verify", str(repo), "--revision", "v2").returncode == 1


def test_progress_bar_follows_hf_switch(layouts, monkeypatch, capsys) -> None:
    from ckptkit.io.checksums import hash_files

    jobs = {layouts["t5_single"] / "model.safetensors": {"sha256"}}
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    hash_files(jobs)
    assert capsys.readouterr().err == ""
    hash_files(jobs, progress=True, description="hashing-test")
    assert "hashing-test" in capsys.readouterr().err
    hash_files(jobs, progress=False)
    assert capsys.readouterr().err == ""


def test_write_manifest_refuses_a_single_file(layouts) -> None:
    with pytest.raises(ValueError, match="needs the checkpoint directory"):
        verify_checkpoint(layouts["t5_single"] / "model.safetensors", write_manifest=True)
    assert (
        run_cli("verify", str(layouts["t5_single"] / "model.safetensors"), "--write-manifest").returncode == 2
    )
