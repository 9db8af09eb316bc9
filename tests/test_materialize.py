"""materialize: link-free copies and tarballs of hub-cache snapshots, byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from ckptkit import (
    CheckpointNotFoundError,
    DestinationExistsError,
    IncompleteCheckpointError,
    UnsafeCheckpointError,
    materialize,
)
from tests.test_resave import checksums, vae_output

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_hub_cache(source: Path, cache: Path, repo: str = "models--org--pipe") -> Path:
    """A hub cache repo folder holding ``source`` as a snapshot of relative links into ``blobs/``,
    laid out as huggingface_hub's ``file_download`` lays it out; returns the repo folder."""
    repo_dir = cache / repo
    (repo_dir / "blobs").mkdir(parents=True)
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(COMMIT)
    snapshot = repo_dir / "snapshots" / COMMIT
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / path.relative_to(source)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return repo_dir


@pytest.fixture
def hub_repo(layouts, tmp_path) -> Path:
    return make_hub_cache(layouts["pipeline"], tmp_path / "hub")


def test_snapshot_materialized_without_links(hub_repo, layouts, tmp_path):
    snapshot = hub_repo / "snapshots" / COMMIT
    assert all(p.is_symlink() for p in snapshot.rglob("*") if not p.is_dir())
    before = checksums(hub_repo)
    out = materialize(snapshot, tmp_path / "out", manifest=False)
    assert out == tmp_path / "out"
    assert not [p for p in out.rglob("*") if p.is_symlink()]
    assert checksums(out) == checksums(layouts["pipeline"])
    assert checksums(hub_repo) == before
    # what came out loads with the library
    assert vae_output(out, subfolder="vae").shape == (1, 3, 16, 16)


def test_cache_repo_folder_means_its_main_snapshot(hub_repo, layouts, tmp_path):
    out = materialize(hub_repo, tmp_path / "out")
    copied = checksums(out)
    assert copied.pop("SHA256SUMS") and copied == checksums(layouts["pipeline"])


@pytest.mark.parametrize("archive", ["tar", "tar.gz"])
def test_archive_has_no_links_and_files_at_its_root(hub_repo, layouts, tmp_path, archive):
    target = tmp_path / f"model.{archive}"
    out = materialize(hub_repo / "snapshots" / COMMIT, target, archive=archive)
    assert out == target
    with tarfile.open(target) as tar:
        members = tar.getmembers()
        assert all(m.isfile() or m.isdir() for m in members), "no symlinks or hard links"
        assert all(not m.name.startswith(("/", "./", "..")) for m in members)
        files = {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in members if m.isfile()}
    manifest = files.pop("SHA256SUMS")
    assert files == checksums(layouts["pipeline"])
    assert "model_index.json" in files  # at the archive root, as SageMaker expects
    extracted = tmp_path / "extracted"
    with tarfile.open(target) as tar:
        tar.extractall(extracted, filter="data")
    assert json.loads((extracted / "model_index.json").read_text())["_class_name"] == "PixArtAlphaPipeline"
    assert hashlib.sha256((extracted / "SHA256SUMS").read_bytes()).hexdigest() == manifest


def test_local_dir_bookkeeping_is_left_out(layouts, tmp_path):
    src = tmp_path / "local_dir"
    import shutil

    shutil.copytree(layouts["t5_single"], src)
    (src / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (src / ".cache" / "huggingface" / "download" / "model.safetensors.metadata").write_text("x")
    out = materialize(src, tmp_path / "out")
    assert sorted(os.listdir(out)) == ["SHA256SUMS", "config.json", "model.safetensors"]


def test_dangling_link_raises_and_writes_nothing(hub_repo, tmp_path):
    snapshot = hub_repo / "snapshots" / COMMIT
    blob = (snapshot / "vae" / "config.json").resolve()
    blob.unlink()
    with pytest.raises(IncompleteCheckpointError, match="does not exist"):
        materialize(snapshot, tmp_path / "out")
    with pytest.raises(IncompleteCheckpointError):
        materialize(snapshot, tmp_path / "out.tar", archive="tar")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tar").exists()
    assert not [p for p in tmp_path.iterdir() if ".ckptkit-" in p.name]


def test_existing_destination_and_overwrite(hub_repo, tmp_path):
    target = tmp_path / "model.tar.gz"
    target.write_text("old")
    with pytest.raises(DestinationExistsError):
        materialize(hub_repo, target, archive="tar.gz")
    assert target.read_text() == "old"
    materialize(hub_repo, target, archive="tar.gz", overwrite=True)
    assert tarfile.is_tarfile(target)
    out = tmp_path / "dir"
    materialize(hub_repo, out)
    (out / "stray.txt").write_text("x")
    materialize(hub_repo, out, overwrite=True)
    assert not (out / "stray.txt").exists()


def test_confine_judges_links_against_the_repo_folder(hub_repo, tmp_path):
    snapshot = hub_repo / "snapshots" / COMMIT
    materialize(snapshot, tmp_path / "ok", confine=True)  # links into the repo's blobs are fine
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\0" * 8)
    (snapshot / "extra.bin").symlink_to(outside)
    with pytest.raises(UnsafeCheckpointError):
        materialize(snapshot, tmp_path / "refused", confine=True)
    assert not (tmp_path / "refused").exists()


def test_bad_arguments(hub_repo, tmp_path):
    with pytest.raises(ValueError, match="archive"):
        materialize(hub_repo, tmp_path / "x.zip", archive="zip")
    snapshot = hub_repo / "snapshots" / COMMIT
    with pytest.raises(ValueError, match="inside"):
        materialize(snapshot, snapshot / "copy")


def test_cli_materialize(hub_repo, tmp_path, capsys):
    from ckptkit.cli import main

    assert (
        main(["materialize", str(hub_repo), str(tmp_path / "m.tar.gz"), "--archive", "tar.gz", "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["bytes"] == (tmp_path / "m.tar.gz").stat().st_size
    assert main(["materialize", str(hub_repo), str(tmp_path / "m.tar.gz"), "--archive", "tar.gz"]) == 1


# -- shipping: SHA256SUMS, include/exclude, selected weight sets ---------------------------------


def test_manifest_makes_verify_hash_every_file(hub_repo, tmp_path):
    from ckptkit import verify_checkpoint

    out = materialize(hub_repo, tmp_path / "out")
    report = verify_checkpoint(out)
    assert report.ok and report.unverified == [], report.unverified
    assert len(report.verified) == len(report.files) > 10
    # the digests came from the blob names: a blob damaged in the cache is caught on the copy
    snapshot = hub_repo / "snapshots" / COMMIT
    blob = (snapshot / "vae" / "config.json").resolve()
    blob.write_text(blob.read_text().replace("{", "{ ", 1))
    damaged = materialize(hub_repo, tmp_path / "damaged")
    report = verify_checkpoint(damaged)
    assert not report.ok and any("vae/config.json" in p.message for p in report.problems)


def test_archive_manifest_verifies_after_extraction(hub_repo, tmp_path):
    from ckptkit import verify_checkpoint

    target = materialize(hub_repo, tmp_path / "model.tar.gz", archive="tar.gz", exclude="*.fp16.*")
    extracted = tmp_path / "x"
    with tarfile.open(target) as tar:
        tar.extractall(extracted, filter="data")
    assert not list(extracted.rglob("*.fp16.*"))
    report = verify_checkpoint(extracted)
    assert report.ok and report.unverified == [] and len(report.verified) == len(report.files)


def test_include_exclude_and_components(hub_repo, tmp_path):
    out = materialize(hub_repo, tmp_path / "a", include=["*.json"], manifest=False)
    assert all(p.suffix == ".json" for p in out.rglob("*") if p.is_file())
    out = materialize(hub_repo, tmp_path / "b", components=["vae"], exclude="*.fp16.*")
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert "model_index.json" in names and all("/" not in n or n.startswith("vae/") for n in names)
    assert not any(".fp16." in n for n in names)
    with pytest.raises(CheckpointNotFoundError, match=r"not a component of this pipeline: 'unet'.*some of: "):
        materialize(hub_repo, tmp_path / "c", components="unet")
    with pytest.raises(ValueError, match="leaves no file"):
        materialize(hub_repo, tmp_path / "d", include="*.nothing")


def test_selected_weight_sets_only(layouts, tmp_path):
    import shutil

    src = tmp_path / "src"
    shutil.copytree(layouts["pipeline"], src)
    shutil.copy(layouts["t5_bin"] / "pytorch_model.bin", src / "text_encoder" / "pytorch_model.bin")
    everything = materialize(src, tmp_path / "all", manifest=False)
    assert (everything / "text_encoder" / "pytorch_model.bin").is_file()
    out = materialize(src, tmp_path / "fp16", weight_sets="selected", variant="fp16")
    names = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert not (out / "text_encoder" / "pytorch_model.bin").exists()  # the .bin duplicate stays behind
    assert any(n.startswith("vae/") and ".fp16." in n for n in names)
    assert not any(n.startswith("vae/diffusion_pytorch_model-") and ".fp16" not in n for n in names)
    assert (out / "transformer" / "diffusion_pytorch_model.safetensors").is_file()  # no fp16: the default
    assert (out / "text_encoder" / "config.json").is_file()
    with pytest.raises(ValueError, match="weight_sets='selected'"):
        materialize(src, tmp_path / "bad", variant="fp16")


def test_cli_materialize_selection_flags(hub_repo, tmp_path):
    from ckptkit.cli import main

    args = ["materialize", str(hub_repo), str(tmp_path / "m"), "--selected", "--variant", "fp16"]
    assert main([*args, "--components", "vae", "--exclude", "*.json", "--no-progress"]) == 0
    names = sorted(
        p.relative_to(tmp_path / "m").as_posix() for p in (tmp_path / "m").rglob("*") if p.is_file()
    )
    assert "SHA256SUMS" in names and not any(n.endswith(".json") for n in names)
    vae = [n for n in names if n != "SHA256SUMS"]
    assert vae and all(n.startswith("vae/") and ".fp16" in n for n in vae), names
