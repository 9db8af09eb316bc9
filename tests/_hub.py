"""Hub-shaped directories built by hand from real saved checkpoints, and a CLI runner.

``make_hub_cache`` lays files out exactly as huggingface_hub's cache does
(``models--org--name/blobs/<etag>``, ``snapshots/<commit>/<path>`` -> ``../../blobs/<etag>``,
``refs/main``): weights as LFS files named by their sha256, everything else by its git blob sha1.
``make_local_dir`` copies files and writes their download metadata with huggingface_hub's own writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from ckptkit.resolve.hub_misses import hf_cli
from tests._subprocess import REPO, run_cli

__all__ = ["REPO", "run_cli"]  # the runner lives in tests._subprocess; kept importable here
COMMIT = "0123456789abcdef0123456789abcdef01234567"
#: The download command of the installed huggingface_hub's CLI (``hf download``, before 0.34
#: ``huggingface-cli download``), as fetch suggestions name it.
HF_DOWNLOAD = hf_cli("download")
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")


def etag_of(path: Path) -> str:
    data = path.read_bytes()
    if path.name.endswith(LFS_SUFFIXES):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def make_hub_cache(src: Path, cache: Path, repo_id: str = "org/tiny") -> Path:
    """Put every file of ``src`` into a hub cache under ``cache``; returns the snapshot directory."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    for file in sorted(p for p in src.rglob("*") if p.is_file()):
        relative = file.relative_to(src)
        etag = etag_of(file)
        shutil.copyfile(file, repo / "blobs" / etag)
        link = snapshot / relative
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink("../" * (len(relative.parts) + 1) + f"blobs/{etag}", link)
    return snapshot


def make_local_dir(src: Path, local_dir: Path) -> Path:
    """Copy ``src`` as ``snapshot_download(local_dir=...)`` leaves it, metadata included."""
    from huggingface_hub._local_folder import write_download_metadata

    shutil.copytree(src, local_dir)
    for file in sorted(p for p in local_dir.rglob("*") if p.is_file() and ".cache" not in p.parts):
        write_download_metadata(local_dir, file.relative_to(local_dir).as_posix(), COMMIT, etag_of(file))
    return local_dir


def blob_of(link: Path) -> Path:
    return Path(os.path.realpath(link))


def flip_byte(path: Path, offset_from_end: int = 1) -> None:
    """Flip one byte of tensor data (near the end, so the header stays valid)."""
    with open(path, "r+b") as handle:
        handle.seek(-offset_from_end, os.SEEK_END)
        byte = handle.read(1)
        handle.seek(-offset_from_end, os.SEEK_END)
        handle.write(bytes([byte[0] ^ 0xFF]))


def write_tree_listing(folder: Path, files: dict[str, Path]) -> None:
    """Write ``trees/<COMMIT>.json`` under ``folder`` with huggingface_hub's own writer.

    LFS files get their sha256 and a pointer blob id (as the hub lists them), others their git blob sha1.
    huggingface_hub < 1.22 has no writer: the file is then written as a newer client sharing the
    cache leaves it (format version 1, the format the newest environment checks against the writer).
    """
    entries: dict[str, dict[str, object]] = {}
    for repo_path, file in files.items():
        size = file.stat().st_size
        if file.name.endswith(LFS_SUFFIXES):
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{etag_of(file)}\nsize {size}\n".encode()
            pointer_id = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
            entries[repo_path] = {
                "size": size,
                "blob_id": pointer_id,
                "lfs_sha256": etag_of(file),
                "lfs_size": size,
            }
        else:
            entries[repo_path] = {"size": size, "blob_id": etag_of(file)}
    try:
        from huggingface_hub._tree_cache import TreeCacheEntry, write_tree_cache
    except ImportError:
        (folder / "trees").mkdir(parents=True, exist_ok=True)
        data = {"format_version": 1, "files": {k: entries[k] for k in sorted(entries)}}
        (folder / "trees" / f"{COMMIT}.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
        return
    write_tree_cache(str(folder), COMMIT, {k: TreeCacheEntry(**v) for k, v in entries.items()})  # type: ignore[arg-type]
