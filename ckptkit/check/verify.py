"""``verify_checkpoint``: is this checkpoint whole and unchanged? Offline, torch-free, streaming.

Structure comes from the format core (every rule :func:`inspect_checkpoint` and
:func:`~ckptkit.format.validate.check_weight_set` apply, for every weight set present). Content is
checked against whatever records what the bytes should be: the blob names of the hub cache, the
download metadata of ``snapshot_download(local_dir=...)``, and ``SHA256SUMS`` manifests.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ckptkit.check.checksums import MANIFEST_NAME, ZIP_CRC, hash_files, list_content_files, read_manifest
from ckptkit.check.checksums import write_manifest as _write_manifest
from ckptkit.check.inspect import CheckpointInfo, Problem, inspect_checkpoint
from ckptkit.errors import CkptError
from ckptkit.format.confine import confine_enabled
from ckptkit.format.hub_files import (
    ExpectedDigest,
    etag_expectation,
    find_local_dir_root,
    hub_blob_expectation,
    hub_repo_root,
    read_download_metadata,
    read_tree_listing,
    snapshot_commit,
    tree_expectation,
)
from ckptkit.format.layout import discover_weight_sets
from ckptkit.format.naming import parse_weight_filename
from ckptkit.format.safe_files import confinement
from ckptkit.format.validate import check_weight_set

__all__ = ["FileCheck", "VerifyReport", "verify_checkpoint", "write_manifest"]

write_manifest = _write_manifest


@dataclass
class FileCheck:
    """The content check of one file.

    Attributes:
        name: the file, relative to the verified directory.
        size: its size in bytes (``None`` when it cannot be read, a dangling link).
        expected: the digests recorded for it, as ``{"algorithm", "hexdigest", "source"}``.
        computed: algorithm -> digest actually computed (empty with ``checksums=False``).
        ok: ``True`` when every recorded digest matched, ``False`` when one did not, ``None``
            when nothing was compared.
    """

    name: str
    size: int | None
    expected: list[dict[str, str]] = field(default_factory=list)
    computed: dict[str, str] = field(default_factory=dict)
    ok: bool | None = None


@dataclass
class VerifyReport:
    """What :func:`verify_checkpoint` found.

    Attributes:
        path: the directory verified.
        root: the checkpoint root links are judged against.
        checksums: whether file contents were hashed.
        problems: everything wrong, one line each naming its file (``severity`` ``"error"`` or
            ``"warning"``).
        files: the content check of each file.
        outside_links: links whose real path lies outside the root (``"link -> real path"``).
        manifests: the ``SHA256SUMS`` files used.
        manifest_written: the manifest written by ``write_manifest=True``, if any.
        bytes_hashed: bytes read to hash.
        seconds: wall time of the whole check.
    """

    path: str
    root: str
    checksums: bool
    problems: list[Problem] = field(default_factory=list)
    files: list[FileCheck] = field(default_factory=list)
    outside_links: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    manifest_written: str | None = None
    bytes_hashed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No error (warnings allowed)."""
        return not any(p.severity == "error" for p in self.problems)

    @property
    def verified(self) -> list[str]:
        """Files whose recorded digests all matched."""
        return [f.name for f in self.files if f.ok]

    @property
    def unverified(self) -> list[str]:
        """Files that nothing recorded a digest for (or that were not hashed)."""
        return [f.name for f in self.files if f.ok is None]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; its keys are stable for scripts."""
        result = asdict(self)
        result.update(ok=self.ok, verified=len(self.verified), unverified=len(self.unverified))
        return result


def verify_checkpoint(
    spec: str | os.PathLike[str],
    *,
    checksums: bool = True,
    variant: str | None = None,
    confine: bool | None = None,
    write_manifest: bool = False,
    progress: bool | None = None,
    **resolve_kwargs: object,
) -> VerifyReport:
    """Check a checkpoint's structure and, with ``checksums``, its content. Offline; never imports torch.

    Structure: every rule of the format core, for every weight set present (missing shards,
    truncated or malformed headers, an index that lies, dangling links, unfinished downloads).
    Content (read in 4 MiB chunks, several files at once): a hub snapshot file must hash to the name
    of the blob it links to (sha256 for LFS files, git blob sha1 for small ones); a file of a
    ``snapshot_download(local_dir=...)`` to the etag in its download metadata; every file listed in a
    ``SHA256SUMS`` of the directory (or of a parent up to the root) to its line there.

    Args:
        spec: a directory or weights file (or any form :func:`resolve_ckpt_dir` accepts). For a
            file, only its weight set is hashed.
        checksums: hash file contents; ``False`` checks structure only (fast).
        variant: the variant a load would ask for (decides the set reported as selected).
        confine: refuse (raise) when a link's real path lies outside the checkpoint root; ``None``
            follows ``CKPTKIT_CONFINE=1``.
        write_manifest: when no problem is found, also write ``SHA256SUMS`` into the directory
            (every file hashed once for both purposes).
        progress: show a progress bar on stderr; ``None``: when stderr is a terminal and
            ``HF_HUB_DISABLE_PROGRESS_BARS`` is not set (the default of every ckptkit verb).
        resolve_kwargs: passed to :func:`resolve_ckpt_dir` (``subfolder``, ``revision``, ``cache_dir``, ...).

    Returns:
        The :class:`VerifyReport`; ``report.ok`` is false when anything is wrong.

    Raises:
        ValueError: ``write_manifest`` for a single file.
        UnsafeCheckpointError: ``confine`` and a link leads outside the root (before any read).
        CheckpointNotFoundError: ``spec`` names nothing that exists.

    Example:
        >>> report = verify_checkpoint("~/.cache/huggingface/hub/models--org--name/snapshots/abc/vae")  # doctest: +SKIP
        >>> report.ok, len(report.verified), [p.message for p in report.problems]  # doctest: +SKIP
        (True, 3, [])
    """
    started = time.perf_counter()
    spec_path = Path(os.path.expanduser(os.fspath(spec)))
    single_file = spec_path.is_file() and not resolve_kwargs.get("subfolder")
    if write_manifest and single_file:
        raise ValueError(f"{spec}: write_manifest needs the checkpoint directory, not one of its files")
    # With confine, inspect refuses outside links before any file content is read.
    info = inspect_checkpoint(spec, variant=variant, confine=confine, **resolve_kwargs)
    directory = Path(info.path)
    root = Path(info.root or info.path)
    report = VerifyReport(path=str(directory), root=str(root), checksums=checksums)

    _add_problems(report, _structure_problems(info, whole_directory=not single_file))
    report.outside_links = [
        f"{directory / f.name} -> {os.path.realpath(directory / f.name)}"
        for f in info.files
        if f.outside_root
    ]

    files = _scope(info, directory, single_file)
    expectations = _expectations(report, files, directory, root)
    jobs: dict[Path, set[str]] = {}
    for path in files:
        if not path.exists():
            continue
        wanted = {e.algorithm for e in expectations.get(path, [])} if checksums else set()
        parsed = parse_weight_filename(path.name)
        if checksums and parsed is not None and parsed.format == "torch":
            wanted.add(ZIP_CRC)  # torch's zip format records a CRC-32 per member
        if write_manifest:
            wanted.add("sha256")
        if wanted:
            jobs[path] = wanted
    # Files are confined again as they are opened for hashing (by descriptor, after any swap).
    with confinement(root if confine_enabled(confine) else None):
        results = hash_files(jobs, progress=progress, description="verify")
    report.bytes_hashed = sum(os.path.getsize(p) for p, r in results.items() if not isinstance(r, Exception))
    for path in files:
        report.files.append(_compare(report, path, directory, expectations.get(path, []), results.get(path)))

    if write_manifest and report.ok and not single_file:
        digests = {
            p: r["sha256"] for p, r in results.items() if not isinstance(r, Exception) and "sha256" in r
        }
        report.manifest_written = str(_write_manifest(directory, digests=digests, progress=progress))
    report.seconds = time.perf_counter() - started
    return report


def _add_problems(report: VerifyReport, problems: list[Problem]) -> None:
    seen = {p.message for p in report.problems}
    for problem in problems:
        problem.message = " ".join(problem.message.split())  # one line each
        if problem.message not in seen:
            seen.add(problem.message)
            report.problems.append(problem)


def _structure_problems(info: CheckpointInfo, *, whole_directory: bool) -> list[Problem]:
    """The problems inspect found, plus those of the weight sets a load would not select."""
    problems = list(info.problems)
    if whole_directory:
        selected = {w.label for w in info.weight_sets if w.selected}
        try:
            sets = discover_weight_sets(info.path)
        except CkptError:
            sets = []  # inspect has reported why
        for weight_set in sets:
            if weight_set.label in selected:
                continue
            check = check_weight_set(weight_set)
            problems.extend(Problem.from_error(e) for e in check.errors)
            where = str(weight_set.index_file or weight_set.directory)
            problems.extend(Problem("warning", "warning", where, w) for w in check.warnings)
    for component in info.components.values():
        problems.extend(_structure_problems(component, whole_directory=whole_directory))
    return problems


def _scope(info: CheckpointInfo, directory: Path, single_file: bool) -> list[Path]:
    if not single_file:
        return list_content_files(directory)
    chosen = next((w for w in info.weight_sets if w.selected), None)
    names = [
        *(chosen.files if chosen else []),
        *([chosen.index_file] if chosen and chosen.index_file else []),
    ]
    return sorted(directory / name for name in names)


def _expectations(
    report: VerifyReport, files: list[Path], directory: Path, root: Path
) -> dict[Path, list[ExpectedDigest]]:
    found: dict[Path, list[ExpectedDigest]] = {path: [] for path in files}
    repo_root = hub_repo_root(directory)
    local_dir = None if repo_root else find_local_dir_root(directory)
    listings: dict[tuple[Path, str], dict[str, dict[str, object]] | None] = {}

    def listing(folder: Path, commit: str) -> dict[str, dict[str, object]] | None:
        if (folder, commit) not in listings:
            listings[folder, commit] = read_tree_listing(folder, commit)
        return listings[folder, commit]

    for path in files:
        if repo_root is not None:
            blob = hub_blob_expectation(path, repo_root)
            found[path].extend([blob] if blob else [])
            located = snapshot_commit(path, repo_root)
            tree = listing(repo_root, located[0]) if located else None
            if located and tree is not None:
                entry = tree_expectation(tree, located[1], str(repo_root / "trees" / f"{located[0]}.json"))
                found[path].extend([entry] if entry else [])
        elif local_dir is not None:
            metadata = read_download_metadata(path, local_dir)
            if metadata is None:
                continue
            recorded = etag_expectation(metadata.etag, str(metadata.path))
            found[path].extend([recorded] if recorded else [])
            folder = local_dir / ".cache" / "huggingface"
            tree = listing(folder, metadata.commit)
            if tree is not None:
                repo_path = Path(os.path.abspath(path)).relative_to(os.path.abspath(local_dir)).as_posix()
                entry = tree_expectation(tree, repo_path, str(folder / "trees" / f"{metadata.commit}.json"))
                found[path].extend([entry] if entry else [])

    listed: set[Path] = set()
    for manifest_dir in _manifest_dirs(directory, root):
        manifest = manifest_dir / MANIFEST_NAME
        try:
            entries = read_manifest(manifest)
        except CkptError as exc:
            _add_problems(report, [Problem.from_error(exc)])
            continue
        report.manifests.append(str(manifest))
        for name, digest in entries.items():
            path = manifest_dir / name
            if path in found:
                found[path].append(ExpectedDigest("sha256", digest, str(manifest)))
                listed.add(path)
            elif _is_under(path, directory) and not path.exists():
                _add_problems(
                    report,
                    [
                        Problem(
                            "error",
                            "IncompleteCheckpointError",
                            str(path),
                            f"{path}: listed in {manifest} but missing. "
                            "Fix: restore it from the copy the manifest was written for",
                        )
                    ],
                )
    if report.manifests:
        for path in files:
            if path not in listed:
                _add_problems(
                    report,
                    [Problem("warning", "warning", str(path), f"{path}: not listed in {MANIFEST_NAME}")],
                )
    return found


def _manifest_dirs(directory: Path, root: Path) -> list[Path]:
    dirs = [directory]
    if _is_under(directory, root):
        for parent in directory.parents:
            if not _is_under(parent, root):
                break
            dirs.append(parent)
    return [d for d in dirs if (d / MANIFEST_NAME).is_file()]


def _is_under(path: Path, root: Path) -> bool:
    try:
        Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
    except ValueError:
        return False
    return True


def _compare(
    report: VerifyReport,
    path: Path,
    directory: Path,
    expected: list[ExpectedDigest],
    result: dict[str, str] | OSError | CkptError | None,
) -> FileCheck:
    size = path.stat().st_size if path.exists() else None
    check = FileCheck(
        name=path.relative_to(directory).as_posix(),
        size=size,
        expected=[{"algorithm": e.algorithm, "hexdigest": e.hexdigest, "source": e.source} for e in expected],
    )
    if isinstance(result, CkptError):
        _add_problems(report, [Problem.from_error(result)])
        check.ok = False
        return check
    if isinstance(result, OSError):
        _add_problems(
            report,
            [Problem("error", "IncompleteCheckpointError", str(path), f"{path}: cannot be read: {result}")],
        )
        check.ok = False
        return check
    for expectation in expected:
        if size is not None and expectation.size is not None and size != expectation.size:
            check.ok = False
            _add_problems(report, [_size_mismatch(path, expectation, size)])
            return check
    check.computed = dict(result or {})
    crc = check.computed.get(ZIP_CRC)
    if crc not in (None, "unrecorded"):
        check.expected.append({"algorithm": ZIP_CRC, "hexdigest": "per member", "source": str(path)})
        if crc != "ok":
            _add_problems(report, [_crc_mismatch(path, crc)])
            check.ok = False
            return check
    if result is None or not check.expected or not report.checksums:
        return check
    check.ok = True
    for expectation in expected:
        actual = result.get(expectation.algorithm)
        if actual is not None and actual != expectation.hexdigest:
            check.ok = False
            _add_problems(report, [_mismatch(path, expectation, actual)])
            break  # the other records say the same thing about the same bytes
    return check


def _crc_mismatch(path: Path, members: str) -> Problem:
    message = (
        f"{path}: content damaged: zip member(s) {members} fail their CRC-32. "
        "Fix: download or copy the file again"
    )
    return Problem("error", "CorruptCheckpointError", str(path), message)


def _size_mismatch(path: Path, expectation: ExpectedDigest, size: int) -> Problem:
    message = (
        f"{path}: size is {size} bytes but the tree listing ({expectation.source}) says {expectation.size}: "
        "truncated or replaced. Fix: delete the file and download it again"
    )
    return Problem("error", "CorruptCheckpointError", str(path), message)


def _mismatch(path: Path, expectation: ExpectedDigest, actual: str) -> Problem:
    if expectation.source.endswith(MANIFEST_NAME):
        said_by = f"{MANIFEST_NAME} ({expectation.source})"
        fix = "restore the file from a good copy, or rewrite the manifest (--write-manifest) if the change is intended"
    elif expectation.source.endswith(".metadata"):
        said_by = f"the download metadata ({expectation.source})"
        fix = "delete the file and download it again (hf download ... --local-dir)"
    else:
        said_by = f"its hub cache blob name ({expectation.source})"
        fix = "delete the blob and the snapshot link, then download the file again"
    message = (
        f"{path}: content damaged: {expectation.algorithm} is {actual} but {said_by} says "
        f"{expectation.hexdigest}. Fix: {fix}"
    )
    return Problem("error", "CorruptCheckpointError", str(path), message)
