"""What the hub's own bookkeeping says a downloaded file should hash to, without any network.

Two places huggingface_hub writes that knowledge down:

- the hub cache: ``models--org--name/snapshots/<commit>/<path>`` is a relative link to
  ``../../blobs/<etag>``, and the etag is the file's sha256 (LFS files) or its git blob sha1
  (small files kept in git);
- ``snapshot_download(local_dir=...)``: ``<local_dir>/.cache/huggingface/download/<path>.metadata``
  holds three lines, the commit, the etag and the time it was written (``.huggingface/download/``
  in huggingface_hub 0.23);
- both (huggingface_hub >= 1.22): ``trees/<commit>.json`` in the repo folder (or in
  ``<local_dir>/.cache/huggingface/``) lists every file of the commit with its size, git blob id
  and LFS sha256 — the only record of sizes, and the only one left in no-symlink mode.

Pure Python: reading link targets and small text files only.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ckptkit.errors import CheckpointNotFoundError, CorruptCheckpointError, UnsafeCheckpointError
from ckptkit.format.safe_files import quote_content, read_text_capped

__all__ = [
    "REPO_FOLDER_PREFIXES",
    "ExpectedDigest",
    "DownloadMetadata",
    "digest_kind",
    "download_metadata_expectation",
    "etag_expectation",
    "find_local_dir_root",
    "hub_blob_expectation",
    "hub_repo_root",
    "read_download_metadata",
    "read_tree_listing",
    "repo_folder_snapshot",
    "snapshot_commit",
    "tree_expectation",
]

#: Folder name prefixes of repos in the hub cache (``models--org--name``).
REPO_FOLDER_PREFIXES = ("models--", "datasets--", "spaces--")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
# Where ``local_dir`` downloads keep per-file metadata (current, then huggingface_hub 0.23.x).
_METADATA_DIRS = (Path(".cache") / "huggingface" / "download", Path(".huggingface") / "download")


@dataclass(frozen=True)
class ExpectedDigest:
    """A digest a file should have, and who says so.

    Attributes:
        algorithm: ``"sha256"`` or ``"git-sha1"`` (sha1 of ``b"blob <size>\\0" + data``).
        hexdigest: lower-case hex.
        source: where the expectation comes from (the blob path or the metadata file), for messages.
        size: the size in bytes, when the source records it (tree listings).
    """

    algorithm: str
    hexdigest: str
    source: str
    size: int | None = None


def digest_kind(name: str) -> str | None:
    """``"sha256"`` for 64 hex digits, ``"git-sha1"`` for 40, else ``None`` (an etag we cannot check).

    Example:
        >>> digest_kind("a" * 64), digest_kind("b" * 40), digest_kind("xyz")
        ('sha256', 'git-sha1', None)
    """
    text = name.strip().strip('"').lower()
    if _SHA256.match(text):
        return "sha256"
    if _GIT_SHA1.match(text):
        return "git-sha1"
    return None


def hub_repo_root(path: str | os.PathLike[str]) -> Path | None:
    """The ``models--org--name`` folder when ``path`` lies in one of its snapshots, else ``None``.

    The path is looked at as written (links are not followed): a snapshot path resolved to its
    blob has lost the repo's names.

    Example:
        >>> hub_repo_root("/c/hub/models--org--name/snapshots/abc123/vae")
        PosixPath('/c/hub/models--org--name')
    """
    parts = Path(os.path.abspath(os.fspath(path))).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "snapshots" and parts[i - 1].startswith(REPO_FOLDER_PREFIXES):
            return Path(*parts[:i])
    return None


def repo_folder_snapshot(path: str | os.PathLike[str], *, revision: str | None = None) -> Path | None:
    """The snapshot a hub cache repo folder (``models--org--name``) stands for, or ``None`` for other paths.

    ``revision`` (default ``"main"``) is a commit present under ``snapshots/`` or a name under ``refs/``.

    Raises:
        CheckpointNotFoundError: the revision is in neither place.

    Example:
        >>> repo_folder_snapshot("~/.cache/huggingface/hub/models--org--name")  # doctest: +SKIP
        PosixPath('.../models--org--name/snapshots/0123456789abcdef0123456789abcdef01234567')
    """
    folder = Path(os.path.expanduser(os.fspath(path)))
    if not folder.name.startswith(REPO_FOLDER_PREFIXES) or not (folder / "snapshots").is_dir():
        return None
    revision = revision or "main"
    if _GIT_SHA1.match(revision) and (folder / "snapshots" / revision).is_dir():
        return folder / "snapshots" / revision
    commit = read_ref(folder, revision)
    if commit and (folder / "snapshots" / commit).is_dir():
        return folder / "snapshots" / commit
    present = sorted(p.name for p in (folder / "snapshots").iterdir())
    raise CheckpointNotFoundError(
        f"no snapshot for revision {revision!r} in this hub cache folder"
        + (f" (refs/{revision} points to {commit}, which is not downloaded)" if commit else ""),
        path=folder,
        fix=f"pass revision= one of the snapshots here: {', '.join(present) or 'none'}",
    )


#: ``refs/<name>`` holds a 40-character commit hash and a newline.
MAX_REF_SIZE = 4096


def read_ref(folder: str | os.PathLike[str], revision: str) -> str | None:
    """The commit ``refs/<revision>`` names in a hub cache repo folder, or ``None`` when there is no such ref.

    Raises:
        UnsafeCheckpointError: ``revision`` is not a ref name (absolute, ``..``, empty parts).
        CorruptCheckpointError: the ref file holds anything but a commit hash (a path, binary,
            a huge file); its content is quoted only as a short escaped prefix.
    """
    parts = revision.split("/")
    if (
        not revision
        or revision.startswith("/")
        or "\\" in revision
        or "\0" in revision
        or any(part in ("", ".", "..") for part in parts)
    ):
        raise UnsafeCheckpointError(
            f"revision {quote_content(revision)} is not a ref name",
            path=folder,
            fix="pass a branch, tag or commit",
        )
    ref = Path(folder) / "refs" / revision
    if not os.path.lexists(ref):
        return None
    commit = read_text_capped(ref, MAX_REF_SIZE, what="ref").strip()
    if not _GIT_SHA1.match(commit):
        raise CorruptCheckpointError(
            f"holds {len(commit)} characters that are not a 40-digit commit hash",
            path=ref,
            fix="download the repo again",
        )
    return commit


def hub_blob_expectation(path: Path, repo_root: Path) -> ExpectedDigest | None:
    """The digest a snapshot file should have, read from the name of the blob it links to.

    Returns ``None`` for a file that is not a link into ``repo_root/blobs`` (files copied into the
    snapshot in no-symlink mode, files added by hand) or whose blob name is no known digest.
    """
    if not path.is_symlink():
        return None
    real = Path(os.path.realpath(path))
    blobs = Path(os.path.realpath(repo_root)) / "blobs"
    if real.parent != blobs:
        return None
    kind = digest_kind(real.name)
    return ExpectedDigest(kind, real.name, str(real)) if kind else None


def find_local_dir_root(directory: str | os.PathLike[str], *, max_depth: int = 8) -> Path | None:
    """The ``local_dir`` of a ``snapshot_download(local_dir=...)`` holding ``directory``, or ``None``.

    Looks at ``directory`` and up to ``max_depth`` parents for a ``.cache/huggingface/download``
    (or ``.huggingface/download``) folder.
    """
    current = Path(os.path.abspath(os.fspath(directory)))
    for candidate in [current, *current.parents][: max_depth + 1]:
        if any((candidate / sub).is_dir() for sub in _METADATA_DIRS):
            return candidate
    return None


@dataclass(frozen=True)
class DownloadMetadata:
    """One ``<path>.metadata`` file of a ``local_dir`` download: ``commit``, ``etag`` and where it is."""

    commit: str
    etag: str
    path: Path


def read_download_metadata(path: Path, local_dir: Path) -> DownloadMetadata | None:
    """The metadata huggingface_hub wrote for ``path`` when it downloaded it into ``local_dir``.

    The file is ``<commit>\\n<etag>\\n<timestamp>\\n`` (huggingface_hub ``_local_folder.py``).
    Returns ``None`` when there is none or it is malformed.
    """
    try:
        relative = Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(local_dir)))
    except ValueError:
        return None
    for sub in _METADATA_DIRS:
        metadata = local_dir / sub / f"{relative}.metadata"
        try:
            lines = metadata.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            continue
        if len(lines) < 2:
            return None
        return DownloadMetadata(lines[0].strip(), lines[1].strip().strip('"').lower(), metadata)
    return None


def download_metadata_expectation(path: Path, local_dir: Path) -> ExpectedDigest | None:
    """The digest recorded for ``path`` in its ``local_dir`` download metadata (its etag), or ``None``."""
    metadata = read_download_metadata(path, local_dir)
    return etag_expectation(metadata.etag, str(metadata.path)) if metadata else None


def etag_expectation(etag: str, source: str) -> ExpectedDigest | None:
    """The digest an etag stands for (sha256 or git blob sha1), or ``None`` for another kind of etag."""
    kind = digest_kind(etag)
    return ExpectedDigest(kind, etag.strip().strip('"').lower(), source) if kind else None


def snapshot_commit(path: str | os.PathLike[str], repo_root: Path) -> tuple[str, str] | None:
    """``(commit, path in the repo)`` of a file under ``repo_root/snapshots/<commit>/``, else ``None``."""
    try:
        parts = Path(os.path.abspath(path)).relative_to(Path(os.path.abspath(repo_root)) / "snapshots").parts
    except ValueError:
        return None
    return (parts[0], "/".join(parts[1:])) if len(parts) > 1 else None


def read_tree_listing(folder: Path, commit: str) -> dict[str, dict[str, object]] | None:
    """The ``trees/<commit>.json`` listing under ``folder``: repo path -> its entry, or ``None``.

    Entries are ``{"size", "blob_id", "lfs_sha256"?, "lfs_size"?, "xet_hash"?}`` (huggingface_hub
    ``_tree_cache.py``, format version 1). A listing of another format version is ignored.
    """
    if not _GIT_SHA1.match(commit):
        return None
    try:
        data = json.loads((folder / "trees" / f"{commit}.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if (
        not isinstance(data, dict)
        or data.get("format_version") != 1
        or not isinstance(data.get("files"), dict)
    ):
        return None
    return {k: v for k, v in data["files"].items() if isinstance(v, dict)}


def tree_expectation(
    listing: dict[str, dict[str, object]], repo_path: str, source: str
) -> ExpectedDigest | None:
    """What a tree listing records for ``repo_path``: the LFS sha256 or the git blob id, and the size."""
    entry = listing.get(repo_path)
    if entry is None:
        return None
    size = entry.get("lfs_size", entry.get("size"))
    size = size if isinstance(size, int) and not isinstance(size, bool) else None
    # An LFS file's blob_id is the id of its pointer file, not of its content.
    key, algorithm = ("lfs_sha256", "sha256") if "lfs_sha256" in entry else ("blob_id", "git-sha1")
    value = entry.get(key)
    if isinstance(value, str) and digest_kind(value) == algorithm:
        return ExpectedDigest(algorithm, value.lower(), source, size)
    return None
