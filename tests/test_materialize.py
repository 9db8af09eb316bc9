"""materialize: link-free copies and tarballs of hub-cache snapshots, byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

from ckptkit import DestinationExistsError, IncompleteCheckpointError, UnsafeCheckpointError, materialize
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
    out = materialize(snapshot, tmp_path / "out")
    assert out == tmp_path / "out"
    assert not [p for p in out.rglob("*") if p.is_symlink()]
    assert checksums(out) == checksums(layouts["pipeline"])
    assert checksums(hub_repo) == before
    # what came out loads with the library
    assert vae_output(out, subfolder="vae").shape == (1, 3, 16, 16)


def test_cache_repo_folder_means_its_main_snapshot(hub_repo, layouts, tmp_path):
    out = materialize(hub_repo, tmp_path / "out")
    assert checksums(out) == checksums(layouts["pipeline"])


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
    assert files == checksums(layouts["pipeline"])
    assert "model_index.json" in files  # at the archive root, as SageMaker expects
    extracted = tmp_path / "extracted"
    with tarfile.open(target) as tar:
        tar.extractall(extracted, filter="data")
    assert json.loads((extracted / "model_index.json").read_text())["_class_name"] == "PixArtAlphaPipeline"


def test_local_dir_bookkeeping_is_left_out(layouts, tmp_path):
    src = tmp_path / "local_dir"
    import shutil

    shutil.copytree(layouts["t5_single"], src)
    (src / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (src / ".cache" / "huggingface" / "download" / "model.safetensors.metadata").write_text("x")
    out = materialize(src, tmp_path / "out")
    assert sorted(os.listdir(out)) == ["config.json", "model.safetensors"]


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
