"""Hub repos and the huggingface_hub cache: find a component offline first, else download the minimum.

The cache is read and written by huggingface_hub's own functions (``HfApi.resolve_revision``,
``get_cached_repo_tree``, ``try_to_load_from_cache``, ``snapshot_download``); this module only decides
*which* files a component needs: its ``config.json``, the index of the selected weight set and only
its shards, tokenizer files for a text encoder, and ``model_index.json`` for a pipeline component.
"""

from __future__ import annotations

import logging
import os
import posixpath
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ckptkit.checkpoint import CheckpointDir
from ckptkit.errors import CheckpointNotFoundError, CkptError, IncompleteCheckpointError
from ckptkit.format.components import CONFIG_NAME, MODEL_INDEX_NAME
from ckptkit.format.layout import Selection, WeightSet, discover_weight_sets, select_weight_set
from ckptkit.format.naming import parse_index_filename, parse_weight_filename

__all__ = [
    "TOKENIZER_FILENAMES",
    "DownloadPlan",
    "HubSpec",
    "default_cache_dir",
    "is_offline",
    "parse_cache_path",
    "parse_repo_spec",
    "plan_files",
    "resolve_hub",
]

logger = logging.getLogger("ckptkit")

#: Files a tokenizer is saved as (transformers ``save_pretrained`` of slow and fast tokenizers).
TOKENIZER_FILENAMES = frozenset(
    {
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "spiece.model",
        "sentencepiece.bpe.model",
        "tokenizer.model",
        "vocab.json",
        "vocab.txt",
        "merges.txt",
        "chat_template.jinja",
    }
)
_TEXT_ENCODER_DIR = re.compile(r"^text_encoder(?P<suffix>_\d+)?$")
_REPO_FOLDER_PREFIX = "models--"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]$")


@dataclass
class HubSpec:
    """A component of a hub repo to resolve.

    Attributes:
        repo_id: ``"org/name"``.
        directory: the folder inside the repo that holds the weights (``""`` for the root).
        filename: the path in the repo of one weights file (the file form), else ``None``.
        cache_dir: the hub cache (``cache_dir`` argument, ``HF_HUB_CACHE`` or ``$HF_HOME/hub``).
        revision: branch, tag or commit asked for (``None`` = ``main``).
        pick_only_snapshot: for a ``models--org--name`` folder given without a ``refs/main``, use its
            only snapshot.
    """

    repo_id: str
    directory: str = ""
    filename: str | None = None
    cache_dir: Path = field(default_factory=Path)
    revision: str | None = None
    variant: str | None = None
    variant_fallback: str = "warn"
    weights_name: str | None = None
    allow_patterns: list[str] | None = None
    token: str | bool | None = None
    endpoint: str | None = None
    offline: bool = False
    pick_only_snapshot: bool = False
    looked: list[str] = field(default_factory=list)

    @property
    def storage(self) -> Path:
        return self.cache_dir / (_REPO_FOLDER_PREFIX + self.repo_id.replace("/", "--"))

    @property
    def label(self) -> str:
        where = self.filename or self.directory
        return f"{self.repo_id}/{where}" if where else self.repo_id


@dataclass
class DownloadPlan:
    """The repo files a component needs (``files``) and the weight set chosen from the listing."""

    files: list[str]
    selection: Selection | None = None


# -- telling the forms apart --------------------------------------------------------------------


def is_offline() -> bool:
    """``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``, read now and as huggingface_hub read them at import."""
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").upper()
    return bool(constants.HF_HUB_OFFLINE) or env in constants.ENV_VARS_TRUE_VALUES


def default_cache_dir(cache_dir: str | os.PathLike[str] | None) -> Path:
    """The hub cache huggingface_hub uses: ``cache_dir``, else ``HF_HUB_CACHE``, else ``$HF_HOME/hub``."""
    from huggingface_hub import constants

    return Path(os.path.expanduser(os.fspath(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE)))


def parse_cache_path(path: str | os.PathLike[str]) -> tuple[Path, str, str | None, str] | None:
    """Split a path inside a hub cache: ``(models--org--name folder, repo_id, commit, path in repo)``.

    ``commit`` is ``None`` for the ``models--org--name`` folder itself. ``None`` when ``path`` is not a
    repo folder or a snapshot (or something inside one).

    Example:
        >>> parse_cache_path("/c/models--org--name/snapshots/" + "a" * 40 + "/vae")[1:]
        ('org/name', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'vae')
    """
    parts = Path(os.path.abspath(os.fspath(path))).parts
    for i, part in enumerate(parts):
        if not part.startswith(_REPO_FOLDER_PREFIX) or part.count("--") < 2:
            continue
        repo_id = part[len(_REPO_FOLDER_PREFIX) :].replace("--", "/")
        storage = Path(*parts[: i + 1])
        rest = parts[i + 1 :]
        if not rest:
            return storage, repo_id, None, ""
        if len(rest) >= 2 and rest[0] == "snapshots":
            return storage, repo_id, rest[1], "/".join(rest[2:])
    return None


def parse_repo_spec(spec: str) -> tuple[str, str] | None:
    """``"org/name/sub/dir/file.safetensors"`` -> ``("org/name", "sub/dir/file.safetensors")``.

    ``None`` when ``spec`` cannot be a repo id (absolute, ``./``, ``~``, backslashes, empty parts).

    Example:
        >>> parse_repo_spec("Lightricks/LTX-Video/ltx-video-2b-v0.9.safetensors")
        ('Lightricks/LTX-Video', 'ltx-video-2b-v0.9.safetensors')
    """
    if not spec or spec.startswith(("/", ".", "~")) or "\\" in spec or "--" in spec:
        return None
    parts = spec.strip("/").split("/")
    if len(parts) < 2 or any(p in ("", ".", "..") for p in parts):
        return None
    repo_id = "/".join(parts[:2])
    if not _REPO_ID.match(repo_id) or ".." in repo_id:
        return None
    return repo_id, "/".join(parts[2:])


# -- which files a component needs --------------------------------------------------------------


def _join(directory: str, name: str) -> str:
    return f"{directory}/{name}" if directory else name


def _sets_from_names(names: Iterable[str], directory: Path) -> list[WeightSet]:
    # Index files are left out: the listing names them, but their shards are known only once read,
    # and the shards' own names already group them (``-00001-of-00003``).
    paths = [directory / n for n in names if parse_index_filename(n) is None]
    return discover_weight_sets(directory, files=paths)


def _components(files: list[str], directory: str) -> list[str]:
    prefix = f"{directory}/" if directory else ""
    found = set()
    for f in files:
        if f.startswith(prefix) and "/" in f[len(prefix) :]:
            child, _, name = f[len(prefix) :].partition("/")
            if "/" not in name and parse_weight_filename(name) is not None:
                found.add(child)
    return sorted(found)


def plan_files(
    listing: Iterable[str],
    *,
    directory: str = "",
    filename: str | None = None,
    snapshot: Path,
    variant: str | None = None,
    variant_fallback: str = "warn",
    weights_name: str | None = None,
    label: str = "",
) -> DownloadPlan:
    """The repo files one component needs, chosen from a file listing by ckptkit's variant rules.

    Args:
        listing: every file path in the repo (``"vae/config.json"``, ...).
        directory: the component folder in the repo (``""`` for the root).
        filename: the path of one weights file (the file form): that file, or its whole shard set.
        snapshot: where the repo lands on disk (for the weight sets' paths).
        variant, variant_fallback, weights_name: as for :func:`ckptkit.resolve_ckpt_dir`.
        label: ``"org/name"``, for messages.

    Returns:
        The plan: config, selected index and shards, tokenizer files (text encoders),
        ``model_index.json`` (pipeline components).

    Raises:
        CheckpointNotFoundError: no such folder or file, or no weights in it.
        VariantNotFoundError: the variant rules refuse.

    Example:
        >>> plan_files(["config.json", "model.safetensors"], snapshot=Path("s")).files
        ['config.json', 'model.safetensors']
    """
    files = sorted(set(listing))
    if filename is not None:
        directory = posixpath.dirname(filename)
    here = [posixpath.basename(f) for f in files if posixpath.dirname(f) == directory]
    where = snapshot / directory if directory else snapshot
    if filename is not None:
        return DownloadPlan(_plan_file(files, here, filename, where, label))

    sets = _sets_from_names(here, where)
    if not sets:
        components = _components(files, directory)
        if directory and not any(f.startswith(directory + "/") for f in files):
            top = _components(files, "")
            raise CheckpointNotFoundError(
                f"repo {label} has no folder {directory!r}",
                path=_join(label, directory),
                fix=("pass subfolder= one of: " + ", ".join(top)) if top else "check the subfolder name",
            )
        raise CheckpointNotFoundError(
            "no weights files (*.safetensors, *.bin, *.pt, *.pth, *.ckpt) here",
            path=_join(label, directory),
            fix=("this is a pipeline; pass subfolder= one of: " + ", ".join(components))
            if components
            else "point at the folder that holds the weights (subfolder=)",
        )
    selection = select_weight_set(
        sets,
        variant=variant,
        variant_fallback=variant_fallback,
        name=weights_name,
        where=_join(label, directory),
    )
    chosen = selection.weight_set
    needed = [_join(directory, p.name) for p in chosen.files]
    if chosen.sharded:
        for name in here:
            index = parse_index_filename(name)
            if index and (index.stem, index.format, index.variant) == (
                chosen.name,
                chosen.format,
                chosen.variant,
            ):
                needed.append(_join(directory, name))
    if CONFIG_NAME in here:
        needed.append(_join(directory, CONFIG_NAME))
    needed += _tokenizer_files(files, here, directory)
    if directory and MODEL_INDEX_NAME in files:
        needed.append(MODEL_INDEX_NAME)
    return DownloadPlan(sorted(set(needed)), selection)


def _plan_file(files: list[str], here: list[str], filename: str, where: Path, label: str) -> list[str]:
    directory, name = posixpath.split(filename)
    if filename not in files:
        shown = ", ".join(n for n in here if parse_weight_filename(n)) or "none"
        raise CheckpointNotFoundError(
            f"repo {label} has no file {filename!r}",
            path=_join(label, filename),
            fix=f"weights files in {directory or 'the repo root'}: {shown}",
        )
    parsed = parse_weight_filename(name)
    if parsed is None:
        raise CheckpointNotFoundError(
            "is not a weights file (expected .safetensors, .bin, .pt, .pth or .ckpt)",
            path=_join(label, filename),
        )
    if parsed.shard is None:
        return [filename]
    # A shard stands for its whole set, as for a local file.
    for weight_set in _sets_from_names(here, where):
        if where / name in weight_set.files:
            needed = [_join(directory, p.name) for p in weight_set.files]
            for other in here:
                index = parse_index_filename(other)
                if index and (index.stem, index.variant) == (weight_set.name, weight_set.variant):
                    needed.append(_join(directory, other))
            return sorted(needed)
    return [filename]


def _tokenizer_files(files: list[str], here: list[str], directory: str) -> list[str]:
    out = [_join(directory, n) for n in here if n in TOKENIZER_FILENAMES]
    parent, base = posixpath.split(directory)
    match = _TEXT_ENCODER_DIR.match(base)
    if match:
        # A pipeline keeps text_encoder_2's tokenizer in tokenizer_2/.
        tokenizer_dir = _join(parent, "tokenizer" + (match["suffix"] or ""))
        out += [f for f in files if posixpath.dirname(f) == tokenizer_dir]
    return out


# -- the cache ----------------------------------------------------------------------------------


@dataclass
class _Miss:
    commit: str | None
    missing: list[str] = field(default_factory=list)
    error: CkptError | None = None
    listed: bool = False  # the missing list comes from the repo's listing, not a guess


def _cached_commit(spec: HubSpec) -> str | None:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RevisionResolutionError

    if spec.revision is not None and _COMMIT.match(spec.revision):
        return spec.revision
    try:
        resolved = HfApi().resolve_revision(
            spec.repo_id, revision=spec.revision, cache_dir=spec.cache_dir, local_files_only=True
        )
        return str(resolved.resolved)
    except RevisionResolutionError:
        pass
    snapshots = spec.storage / "snapshots"
    if spec.pick_only_snapshot and spec.revision is None and snapshots.is_dir():
        commits = sorted(p.name for p in snapshots.iterdir() if p.is_dir())
        if len(commits) == 1:
            logger.info("%s has no refs/main; using its only snapshot %s", spec.storage, commits[0])
            return commits[0]
        if len(commits) > 1:
            raise CheckpointNotFoundError(
                "no refs/main and several snapshots: " + ", ".join(commits),
                path=spec.storage,
                fix="pass revision= one of those commits",
            )
    return None


def _local_listing(snapshot: Path, directory: str) -> list[str]:
    """Files under the snapshot root, its top-level folders and ``directory``: enough to plan from."""
    out: list[str] = []
    folders = {directory} if directory else set()
    with os.scandir(snapshot) as entries:
        for entry in entries:
            if entry.is_dir():
                folders.add(entry.name)
            else:
                out.append(entry.name)
    for folder in folders:
        try:
            with os.scandir(snapshot / folder) as entries:
                out += [f"{folder}/{e.name}" for e in entries if not e.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            continue
    return out


def _from_cache(spec: HubSpec, commit: str | None = None) -> CheckpointDir | _Miss:
    """Resolve from the cache alone (no HTTP); a :class:`_Miss` says what is lacking."""
    from huggingface_hub import get_cached_repo_tree, try_to_load_from_cache
    from huggingface_hub.errors import CachedRepoTreeNotFoundError
    from huggingface_hub.utils import filter_repo_objects

    commit = commit or _cached_commit(spec)
    spec.looked.append(str(spec.storage / "refs" / (spec.revision or "main")))
    if commit is None:
        return _Miss(None)
    snapshot = spec.storage / "snapshots" / commit
    spec.looked.append(str(snapshot / (spec.filename or spec.directory)))
    if not snapshot.is_dir():
        return _Miss(commit)
    try:
        tree = get_cached_repo_tree(spec.repo_id, revision=commit, cache_dir=spec.cache_dir)
        listing, listed = [f.path for f in tree], True
    except CachedRepoTreeNotFoundError:
        listing, listed = _local_listing(snapshot, spec.directory), False
    try:
        plan = plan_files(
            listing,
            directory=spec.directory,
            filename=spec.filename,
            snapshot=snapshot,
            variant=spec.variant,
            variant_fallback=spec.variant_fallback,
            weights_name=spec.weights_name,
            label=spec.repo_id,
        )
    except CkptError as exc:
        if listed:
            raise
        return _Miss(commit, error=exc)
    needed = plan.files
    if spec.allow_patterns is not None and listed:
        needed = sorted(set(needed) | set(filter_repo_objects(listing, allow_patterns=spec.allow_patterns)))
    missing = [
        f
        for f in needed
        if not isinstance(try_to_load_from_cache(spec.repo_id, f, spec.cache_dir, commit), str)
    ]
    if missing:
        return _Miss(commit, missing, listed=listed)
    chosen = plan.selection.weight_set if plan.selection else None
    if not listed and chosen is not None and chosen.variant != spec.variant and not spec.offline:
        # Only the cache was listed: the variant asked for may still exist on the Hub.
        return _Miss(commit, [], listed=False)
    return _resolve_snapshot(spec, snapshot, commit)


def _resolve_snapshot(spec: HubSpec, snapshot: Path, commit: str) -> CheckpointDir:
    from ckptkit.resolve import resolve_local

    origin = {"repo_id": spec.repo_id, "revision": commit}
    try:
        if spec.filename is not None:
            ckpt = resolve_local(snapshot / spec.filename, root=spec.storage, **origin)
            ckpt.subfolder = posixpath.dirname(spec.filename) or None
            return ckpt
        return resolve_local(
            snapshot,
            subfolder=spec.directory or None,
            variant=spec.variant,
            variant_fallback=spec.variant_fallback,
            weights_name=spec.weights_name,
            root=spec.storage,
            **origin,
        )
    except IncompleteCheckpointError as exc:
        raise IncompleteCheckpointError(
            exc.detail, path=exc.path, fix=_resume_fix(spec, commit, None)
        ) from None


# -- download -----------------------------------------------------------------------------------


def _download(spec: HubSpec) -> str:
    """List the repo, plan the component's files, and fetch them with ``snapshot_download``."""
    import httpx2
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
        RevisionResolutionError,
    )

    api = HfApi(endpoint=spec.endpoint, token=spec.token)
    where = spec.endpoint or api.endpoint
    spec.looked.append(f"{where}/{spec.repo_id} (revision {spec.revision or 'main'})")
    try:
        revision = api.resolve_revision(spec.repo_id, revision=spec.revision, cache_dir=spec.cache_dir)
        listing = api.list_repo_files(spec.repo_id, revision=revision.resolved)
        snapshot = spec.storage / "snapshots" / revision.resolved
        plan = plan_files(
            listing,
            directory=spec.directory,
            filename=spec.filename,
            snapshot=snapshot,
            variant=spec.variant,
            variant_fallback=spec.variant_fallback,
            weights_name=spec.weights_name,
            label=spec.repo_id,
        )
        patterns = spec.allow_patterns if spec.allow_patterns is not None else plan.files
        logger.info("downloading %d files of %s: %s", len(plan.files), spec.label, ", ".join(plan.files))
        snapshot_download(
            spec.repo_id,
            revision=revision,
            cache_dir=spec.cache_dir,
            allow_patterns=patterns,
            token=spec.token,
            endpoint=spec.endpoint,
        )
    except RevisionNotFoundError:
        raise CheckpointNotFoundError(
            f"revision {spec.revision!r} does not exist in {spec.repo_id}",
            path=f"{where}/{spec.repo_id}",
            fix="pass an existing branch, tag or commit as revision=",
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointNotFoundError(
            f"repo {spec.repo_id} was not found on {where} (or it is private/gated and no valid token was given)",
            path=spec.label,
            fix="check the repo id, log in with `hf auth login` or pass token=; looked in: "
            + "; ".join(spec.looked),
        ) from None
    except (
        RevisionResolutionError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        httpx2.TransportError,
        HfHubHTTPError,
    ) as exc:
        raise CheckpointNotFoundError(
            f"not in the hub cache and the Hub could not be reached ({type(exc).__name__}: {exc})",
            path=spec.label,
            fix=f"check the network or HF_ENDPOINT; looked in: {'; '.join(spec.looked)}; "
            f"fetch it with: {_fetch_command(spec, None)}",
        ) from None
    return revision.resolved


def resolve_hub(spec: HubSpec) -> CheckpointDir:
    """Resolve a hub component: from the cache with no request when it is all there, else download it.

    Raises:
        CheckpointNotFoundError: not cached and offline, or no such repo/revision/folder/file.
        IncompleteCheckpointError: cached in part while offline, or still incomplete after downloading.
        VariantNotFoundError: the variant rules refuse.
    """
    found = _from_cache(spec)
    if isinstance(found, CheckpointDir):
        return found
    if spec.offline:
        raise _offline_miss(spec, found)
    commit = _download(spec)
    again = _from_cache(spec, commit)
    if isinstance(again, CheckpointDir):
        return again
    if again.error is not None:
        raise again.error
    raise IncompleteCheckpointError(
        "still missing after download: " + ", ".join(again.missing),
        path=spec.storage / "snapshots" / commit,
        fix=_resume_fix(spec, commit, again.missing),
    )


# -- messages -----------------------------------------------------------------------------------


def _fetch_command(spec: HubSpec, files: list[str] | None) -> str:
    from huggingface_hub import constants

    words = ["hf", "download", spec.repo_id]
    if files:
        words += files
    elif spec.filename:
        words.append(spec.filename)
    elif spec.directory:
        for pattern in (f"{spec.directory}/*", MODEL_INDEX_NAME):
            words += ["--include", pattern]
    if spec.revision:
        words += ["--revision", spec.revision]
    if os.path.abspath(spec.cache_dir) != os.path.abspath(os.path.expanduser(constants.HF_HUB_CACHE)):
        words += ["--cache-dir", str(spec.cache_dir)]
    return " ".join(shlex.quote(w) for w in words)


def _ckptkit_command(spec: HubSpec) -> str:
    words = ["ckptkit", "resolve", spec.label]
    if spec.revision:
        words += ["--revision", spec.revision]
    if spec.variant:
        words += ["--variant", spec.variant]
    return " ".join(shlex.quote(w) for w in words)


def _resume_fix(spec: HubSpec, commit: str, missing: list[str] | None) -> str:
    incomplete = list((spec.storage / "blobs").glob("*.incomplete"))
    # huggingface_hub restarts a file rather than resuming another process's *.incomplete.
    note = (
        f" ({len(incomplete)} interrupted downloads left *.incomplete files in {spec.storage / 'blobs'}; "
        "they are not reused and can be deleted)"
        if incomplete
        else ""
    )
    return (
        f"download the missing files again{note}: `{_fetch_command(spec, missing)}` "
        f"or `{_ckptkit_command(spec)}` while online"
    )


def _offline_miss(spec: HubSpec, miss: _Miss) -> CkptError:
    why = "local_files_only=True" if not is_offline() else "HF_HUB_OFFLINE=1"
    looked = "; ".join(dict.fromkeys(spec.looked))
    if miss.error is not None:
        exc = miss.error
        extra = f"looked in: {looked}; downloads are off ({why}); fetch with: `{_fetch_command(spec, None)}`"
        return type(exc)(exc.detail, path=exc.path, fix=f"{exc.fix}; {extra}" if exc.fix else extra)
    if miss.commit is not None and miss.missing and miss.listed:
        return IncompleteCheckpointError(
            f"{len(miss.missing)} needed files are not in the cache and downloads are off ({why}): "
            + ", ".join(miss.missing),
            path=spec.storage / "snapshots" / miss.commit,
            fix=_resume_fix(spec, miss.commit, miss.missing),
        )
    return CheckpointNotFoundError(
        f"{spec.label} (revision {spec.revision or 'main'}) is not in the hub cache and downloads are off ({why})",
        path=spec.storage,
        fix=f"looked in: {looked}; fetch it with: `{_fetch_command(spec, miss.missing or None)}` "
        f"(or `{_ckptkit_command(spec)}` while online, which fetches only the files needed)",
    )
