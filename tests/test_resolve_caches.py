"""Every cache the user already has: cache_dir (one or a list), HF_HUB_CACHE, CKPTKIT_CACHE_PATH.

The model is downloaded once by the real client from tests/hub_server.py; every other call must
find it where it is, and the test counts the requests to the server.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ckptkit import CheckpointNotFoundError, resolve_ckpt_dir
from ckptkit.resolve import hub as hub_module
from ckptkit.resolve import hub_reuse


def _storage(cache: Path, repo: str) -> Path:
    return cache / ("models--" + repo.replace("/", "--"))


def test_model_in_hf_hub_cache_is_found_when_cache_dir_names_another_empty_cache(hub, tmp_path):
    from huggingface_hub import constants

    first = resolve_ckpt_dir("org/t5")  # downloads into HF_HUB_CACHE
    default = Path(constants.HF_HUB_CACHE)
    assert first.cache_dir == default
    empty = tmp_path / "project-cache"
    empty.mkdir()
    hub.reset()

    ckpt = resolve_ckpt_dir("org/t5", cache_dir=empty)
    assert hub.requests == []
    assert ckpt.cache_dir == default and ckpt.weight_files == first.weight_files
    assert list(empty.iterdir()) == []  # used in place, not copied


@pytest.mark.parametrize("symlinks", [True, False], ids=["links", "no-links"])
def test_model_partly_in_another_cache_downloads_only_the_missing_files(hub, tmp_path, symlinks):
    from huggingface_hub import constants
    from safetensors.torch import load_file

    default = Path(constants.HF_HUB_CACHE)
    first = resolve_ckpt_dir("org/t5")  # into HF_HUB_CACHE
    shards = sorted(p for p in first.weight_files)
    assert len(shards) > 2
    if not symlinks:  # a cache written with HF_HUB_DISABLE_SYMLINKS: real files in the snapshot
        for pointer in first.path.iterdir():
            blob = pointer.resolve()
            pointer.unlink()
            blob.rename(pointer)
    # An interrupted download: one shard is not there.
    gone = shards[-1]
    gone.unlink(missing_ok=True)
    hub.reset()

    project = tmp_path / "project-cache"
    ckpt = resolve_ckpt_dir("org/t5", cache_dir=project)

    assert hub.downloads() == {f"org/t5/{gone.name}"}
    assert ckpt.cache_dir == project and [p.name for p in ckpt.weight_files] == [p.name for p in shards]
    for path in ckpt.weight_files[:-1]:  # linked into the project cache: the same file, not a copy
        assert path.resolve().stat().st_ino == (first.path / path.name).resolve().stat().st_ino
    for path in ckpt.weight_files:
        assert load_file(path).keys()
    assert not any(default.rglob(gone.name))  # the other cache is left as it was


def test_ckptkit_cache_path_and_a_list_of_caches(hub, tmp_path, monkeypatch):
    other = tmp_path / "team-cache"
    resolve_ckpt_dir("org/vae", cache_dir=other)
    empty_a, empty_b = tmp_path / "a", tmp_path / "b"
    hub.reset()

    monkeypatch.setenv("CKPTKIT_CACHE_PATH", os.pathsep.join([str(tmp_path / "nowhere"), str(other)]))
    ckpt = resolve_ckpt_dir("org/vae", cache_dir=empty_a)
    assert hub.requests == [] and ckpt.cache_dir == other
    monkeypatch.delenv("CKPTKIT_CACHE_PATH")

    listed = resolve_ckpt_dir("org/vae", cache_dir=[empty_a, other, empty_b])
    assert hub.requests == [] and listed.cache_dir == other
    # Nothing found anywhere: the download goes to the first cache named.
    fresh = resolve_ckpt_dir("org/t5", cache_dir=[empty_a, other])
    assert fresh.cache_dir == empty_a and _storage(empty_a, "org/t5").is_dir()
    assert not _storage(other, "org/t5").exists()


def test_offline_miss_lists_every_place_and_fetches_only_what_is_needed(hub, tmp_path, monkeypatch):
    from huggingface_hub import constants

    extra = tmp_path / "extra"
    monkeypatch.setenv("CKPTKIT_CACHE_PATH", str(extra))
    mine = tmp_path / "mine"
    with pytest.raises(CheckpointNotFoundError) as info:
        resolve_ckpt_dir("org/t5", variant="fp16", cache_dir=mine, local_files_only=True)
    message = str(info.value)
    assert hub.requests == []
    for cache in (mine, Path(constants.HF_HUB_CACHE), extra):
        assert str(_storage(cache, "org/t5") / "refs" / "main") in message
    command = message.split("fetch it with: `", 1)[1].split("`", 1)[0]
    # Not a pipeline: no subfolder guessed, no model_index.json; the variant's safetensors only.
    assert "model_index" not in command and "/*" not in command
    assert "'*.fp16*.safetensors'" in command

    words = shlex.split(command)  # hf download ... (huggingface-cli download ... before 0.34)
    hf = Path(sys.executable).with_name(words[0])
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    subprocess.run([str(hf), *words[1:]], check=True, env=env, capture_output=True, timeout=120)
    assert not any(".bin" in p or ("fp16" not in p and p.endswith(".safetensors")) for p in hub.downloads())
    hub.reset()
    ckpt = resolve_ckpt_dir("org/t5", variant="fp16", cache_dir=mine, local_files_only=True)
    assert ckpt.variant == "fp16" and ckpt.cache_dir == mine and hub.requests == []


def test_allow_patterns_reuse_what_another_cache_holds(hub, tmp_path):
    """Files the patterns fetch beyond the computed minimum (the fp16 shards here) are linked too."""
    patterns = ["*.safetensors", "*.json"]
    first = resolve_ckpt_dir("org/t5", allow_patterns=patterns)  # into HF_HUB_CACHE
    fetched = {p.name for p in first.path.iterdir()}
    assert any(".fp16." in name for name in fetched)  # more than the default weight set
    gone = sorted(first.weight_files)[-1]
    gone.unlink()
    hub.reset()

    ckpt = resolve_ckpt_dir("org/t5", cache_dir=tmp_path / "project-cache", allow_patterns=patterns)

    assert hub.downloads() == {f"org/t5/{gone.name}"}
    assert {p.name for p in ckpt.path.iterdir()} == fetched


# -- offline: one model spread over several caches ----------------------------------------------


def _spread_over_two_caches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, listed: bool
) -> tuple[Path, Path, list[Path], Path]:
    """org/t5 downloaded into ``mine`` and into HF_HUB_CACHE, then cut so that neither is whole:
    ``mine`` keeps the first shard, HF_HUB_CACHE the others and the index (the same commit)."""
    from huggingface_hub import constants

    default = Path(constants.HF_HUB_CACHE)
    mine = tmp_path / "mine"
    part = resolve_ckpt_dir("org/t5", cache_dir=mine)
    rest = resolve_ckpt_dir("org/t5")  # into HF_HUB_CACHE
    assert rest.cache_dir == default and rest.revision == part.revision
    shards = sorted(rest.weight_files)
    assert len(shards) > 2 and part.index_file is not None
    for path in [*sorted(part.weight_files)[1:], part.index_file, rest.path / shards[0].name]:
        _remove(path)
    if not listed:  # caches written by a client that records no listing (huggingface_hub < 1.26)
        for cache in (mine, default):
            for listing in cache.glob("models--*/trees/*"):
                listing.unlink()
        # A newer client in this process still remembers the listings it wrote: ckptkit's own
        # reading of them answers as with an older client.
        for module in (hub_module, hub_reuse):
            monkeypatch.setattr(module, "cached_listing", lambda *args: None)
    return mine, default, shards, rest.path


def _remove(pointer: Path) -> None:
    """Remove a file from a hub cache: its snapshot link and the blob (as if never downloaded)."""
    blob = pointer.resolve()
    pointer.unlink()
    blob.unlink()


def _snapshot_files(cache: Path) -> dict[str, bool]:
    """Path in the snapshot -> whether it is a link, for every file of org/t5 in ``cache``."""
    return {
        p.relative_to(cache).as_posix(): p.is_symlink()
        for p in _storage(cache, "org/t5").rglob("*")
        if not p.is_dir()
    }


@pytest.mark.parametrize("offline", ["local_files_only", "unreachable"])
@pytest.mark.parametrize("listed", [True, False], ids=["listing", "no-listing"])
def test_offline_a_model_spread_over_two_caches_is_put_together_in_the_first(
    hub, tmp_path, monkeypatch, listed, offline
):
    from huggingface_hub import constants
    from safetensors.torch import load_file

    mine, default, shards, snapshot = _spread_over_two_caches(tmp_path, monkeypatch, listed=listed)
    before = _snapshot_files(default)
    ref = _storage(mine, "org/t5") / "refs" / "main"
    ref.unlink()  # the commit is known from HF_HUB_CACHE alone
    hub.reset()

    if offline == "local_files_only":
        ckpt = resolve_ckpt_dir("org/t5", cache_dir=[mine, default], local_files_only=True)
    else:  # no network, HF_HUB_OFFLINE unset: the request fails, the caches still have it all
        monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
        ckpt = resolve_ckpt_dir("org/t5", cache_dir=[mine, default], endpoint="http://127.0.0.1:9")

    assert hub.requests == []
    assert ckpt.cache_dir == mine and [p.name for p in ckpt.weight_files] == [p.name for p in shards]
    for path in ckpt.weight_files[1:]:  # linked from HF_HUB_CACHE: the same file, not a copy
        assert path.resolve().stat().st_ino == (snapshot / path.name).resolve().stat().st_ino
    assert {k: v for f in ckpt.weight_files for k, v in load_file(f).items()}
    assert _snapshot_files(default) == before  # the other cache is left as it was
    assert ref.read_text() == ckpt.revision  # other clients find the snapshot by refs/main too
    # Put together once, the first cache is whole: found there alone, by refs/main, next time.
    again = resolve_ckpt_dir("org/t5", cache_dir=mine, local_files_only=True)
    assert again.cache_dir == mine and again.weight_files == ckpt.weight_files and hub.requests == []


@pytest.mark.parametrize("listed", [True, False], ids=["listing", "no-listing"])
def test_offline_a_file_no_cache_holds_is_named_alone_with_every_place_looked(
    hub, tmp_path, monkeypatch, listed
):
    from huggingface_hub import constants

    from ckptkit import IncompleteCheckpointError

    mine, default, shards, snapshot = _spread_over_two_caches(tmp_path, monkeypatch, listed=listed)
    _remove(snapshot / shards[-1].name)  # the last shard is now in no cache
    extra = tmp_path / "extra"
    before = _snapshot_files(mine)
    hub.reset()

    with pytest.raises(IncompleteCheckpointError) as info:
        resolve_ckpt_dir("org/t5", cache_dir=[mine, default, extra], local_files_only=True)

    message = str(info.value)
    assert hub.requests == []
    assert "1 needed files are not in any of the caches" in message and shards[-1].name in message
    for other in shards[:-1]:  # held by one cache or the other: not named
        assert other.name not in message
    assert "index.json" not in message
    for cache in (mine, Path(constants.HF_HUB_CACHE), extra):
        assert str(_storage(cache, "org/t5") / "refs" / "main") in message
    command = message.split("download the missing files again: `", 1)[1].split("`", 1)[0]
    assert shlex.split(command)[-3:] == [shards[-1].name, "--cache-dir", str(mine)]
    assert _snapshot_files(mine) == before  # nothing linked while it cannot be whole


@pytest.mark.parametrize("symlinks", [True, False], ids=["links", "no-links"])
def test_across_file_systems_a_found_file_is_linked_to_never_copied(hub, tmp_path, monkeypatch, symlinks):
    """A hard link across file systems fails with EXDEV: the fallback is a symbolic link to the
    file found, so that its bytes are on disk once."""
    import errno

    mine, default, _, snapshot = _spread_over_two_caches(tmp_path, monkeypatch, listed=True)
    if not symlinks:  # HF_HUB_DISABLE_SYMLINKS: the files themselves in the snapshot
        for pointer in snapshot.iterdir():
            blob = pointer.resolve()
            pointer.unlink()
            blob.rename(pointer)
    tried = []

    def cross_device(src, dst, *args, **kwargs):
        tried.append(Path(dst))
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))

    def regular_files() -> set[Path]:
        storage = _storage(mine, "org/t5")
        return {p for p in storage.rglob("*") if p.is_file() and not p.is_symlink() and "refs" not in p.parts}

    own = regular_files()
    monkeypatch.setattr(os, "link", cross_device)
    ckpt = resolve_ckpt_dir("org/t5", cache_dir=[mine, default], local_files_only=True)

    # A hard link was tried first for each file mine lacked: the shards after the first, the index.
    assert ckpt.cache_dir == mine and len(tried) == len(ckpt.weight_files[1:]) + 1
    for path in ckpt.weight_files[1:]:
        found = (snapshot / path.name).resolve()  # the file in HF_HUB_CACHE
        assert Path(os.path.realpath(path)) == found
        link = _storage(mine, "org/t5") / "blobs" / found.name if symlinks else path
        assert link in tried and link.is_symlink() and link.readlink() == found
    assert regular_files() == own  # not one byte copied


# -- offline gathering: what the first cache already has, what it cannot take ------------------


def test_a_dangling_link_in_the_first_cache_is_replaced_by_the_file_another_cache_holds(
    hub, tmp_path, monkeypatch
):
    mine, default, shards, snapshot = _spread_over_two_caches(tmp_path, monkeypatch, listed=True)
    pointer = _storage(mine, "org/t5") / "snapshots" / snapshot.name / shards[1].name
    os.symlink("../../blobs/nonexistent", pointer)  # an interrupted download or a blob removed by hand
    hub.reset()

    ckpt = resolve_ckpt_dir("org/t5", cache_dir=[mine, default], local_files_only=True)

    assert hub.requests == [] and ckpt.cache_dir == mine
    assert (
        pointer.exists()
        and pointer.resolve().stat().st_ino == (snapshot / shards[1].name).resolve().stat().st_ino
    )


def test_a_file_another_cache_holds_that_cannot_be_linked_is_named_with_that_cache(
    hub, tmp_path, monkeypatch
):
    from huggingface_hub import constants

    from ckptkit import IncompleteCheckpointError

    mine, default, shards, snapshot = _spread_over_two_caches(tmp_path, monkeypatch, listed=True)
    pointer = _storage(mine, "org/t5") / "snapshots" / snapshot.name / shards[1].name
    pointer.mkdir()  # not a file, not a link: nothing to replace

    with pytest.raises(IncompleteCheckpointError) as info:
        resolve_ckpt_dir("org/t5", cache_dir=[mine, default], local_files_only=True)

    message = str(info.value)
    assert (
        f"{shards[1].name} is held by {constants.HF_HUB_CACHE} but could not be linked into {mine}" in message
    )
    assert str(pointer) in message


def test_a_blob_another_process_made_meanwhile_is_used(hub, tmp_path, monkeypatch):
    """Between looking for blobs/<hash> and linking it, another process may make it: the same file
    (its name is its hash), so the snapshot pointer is made to it all the same."""
    mine, default, shards, _ = _spread_over_two_caches(tmp_path, monkeypatch, listed=True)
    made = []
    same_file = hub_reuse._same_file

    def racing(src, dst):
        same_file(src, dst)  # the other process
        made.append(dst)
        same_file(src, dst)  # ours: FileExistsError

    monkeypatch.setattr(hub_reuse, "_same_file", racing)
    ckpt = resolve_ckpt_dir("org/t5", cache_dir=[mine, default], local_files_only=True)

    assert made and ckpt.cache_dir == mine
    assert [p.name for p in ckpt.weight_files] == [p.name for p in shards]


def test_a_first_cache_that_cannot_be_written_is_a_typed_error_naming_it(hub, tmp_path, monkeypatch):
    import errno

    from ckptkit import IncompleteCheckpointError

    mine, default, _, _ = _spread_over_two_caches(tmp_path, monkeypatch, listed=True)

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(hub_reuse, "_same_file", read_only)  # tests run as root: chmod would not stop them
    with pytest.raises(IncompleteCheckpointError) as info:
        resolve_ckpt_dir("org/t5", cache_dir=[mine, default], local_files_only=True)

    message = str(info.value)
    assert f"the first, {mine}, where it is put together, is not writable" in message
    assert os.strerror(errno.EROFS) in message and "cache_dir=" in message


def test_a_link_in_another_cache_leading_out_of_its_blobs_is_not_a_file_it_holds(hub, tmp_path, monkeypatch):
    from ckptkit import IncompleteCheckpointError

    mine, default, shards, snapshot = _spread_over_two_caches(tmp_path, monkeypatch, listed=True)
    elsewhere = tmp_path / "elsewhere.safetensors"
    last = snapshot / shards[-1].name
    elsewhere.write_bytes(last.read_bytes())
    _remove(last)
    last.symlink_to(elsewhere)  # the same bytes, but not in that cache's blobs/
    before = _snapshot_files(mine)

    with pytest.raises(IncompleteCheckpointError) as info:
        resolve_ckpt_dir("org/t5", cache_dir=[mine, default], local_files_only=True)

    assert "1 needed files are not in any of the caches" in str(info.value) and shards[-1].name in str(
        info.value
    )
    assert _snapshot_files(mine) == before  # nothing linked to the file outside


@pytest.mark.parametrize("name", ["../../../escape.txt", "/abs/escape.txt", "sub\\..\\..\\escape.txt"])
def test_a_recorded_listing_naming_a_path_out_of_the_snapshot_is_refused(hub, tmp_path, monkeypatch, name):
    from ckptkit import UnsafeCheckpointError

    mine, default, _, snapshot = _spread_over_two_caches(tmp_path, monkeypatch, listed=True)
    held = {
        f
        for cache in (mine, default)
        for f in hub_reuse.local_listing(_storage(cache, "org/t5") / "snapshots" / snapshot.name, "")
    }
    # The listing a cache recorded (a client that records none, huggingface_hub < 1.26: the one it would have).
    monkeypatch.setattr(hub_reuse, "cached_listing", lambda *args: [*sorted(held), name])
    (default / "escape.txt").write_text("outside")  # where the name leads from HF_HUB_CACHE's snapshot

    with pytest.raises(UnsafeCheckpointError) as info:
        resolve_ckpt_dir("org/t5", cache_dir=[mine, default], local_files_only=True, allow_patterns=["*"])

    assert repr(name) in str(info.value)
    assert not (mine / "escape.txt").exists() and not any(mine.rglob("escape.txt"))


def test_online_a_file_that_cannot_be_linked_from_another_cache_is_downloaded(
    hub, tmp_path, monkeypatch, caplog
):
    import errno
    import logging

    from huggingface_hub import constants
    from safetensors.torch import load_file

    first = resolve_ckpt_dir("org/t5")  # into HF_HUB_CACHE
    first.weight_files[-1].unlink()  # the project cache needs one file downloaded anyway
    hub.reset()

    def cannot_link(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))

    monkeypatch.setattr(hub_reuse, "_same_file", cannot_link)
    project = tmp_path / "project-cache"
    with caplog.at_level(logging.WARNING, logger="ckptkit"):
        ckpt = resolve_ckpt_dir("org/t5", cache_dir=project)

    assert "could not be linked" in caplog.text and os.strerror(errno.EROFS) in caplog.text
    assert ckpt.cache_dir == project
    assert {f"org/t5/{p.name}" for p in ckpt.weight_files} <= hub.downloads()
    assert Path(constants.HF_HUB_CACHE) not in ckpt.weight_files[0].resolve().parents
    for path in ckpt.weight_files:
        assert load_file(path).keys()
