"""What to tell a user when the hub cache lacks a file: the miss, the commands that fetch it, the error.

Kept apart from :mod:`ckptkit.resolve.hub` (which finds and downloads) so each stays one concern.
"""

from __future__ import annotations

import importlib.util
import os
import posixpath
import shlex
from dataclasses import dataclass, field

from ckptkit.errors import CheckpointNotFoundError, CkptError, IncompleteCheckpointError
from ckptkit.resolve.hub_spec import HubSpec

__all__ = ["CacheMiss", "ckptkit_command", "fetch_command", "hf_cli", "offline_miss", "resume_fix"]


@dataclass
class CacheMiss:
    """What the cache lacks for a spec: the commit looked at and the files missing (or the error met)."""

    commit: str | None
    missing: list[str] = field(default_factory=list)
    error: CkptError | None = None
    listed: bool = False  # the missing list comes from the repo's listing, not a guess
    none_here: bool = False  # none of the files needed is in the cache


# -- messages -----------------------------------------------------------------------------------


def _custom_cache(spec: HubSpec) -> list[str]:
    from huggingface_hub import constants

    if os.path.abspath(spec.cache_dir) == os.path.abspath(os.path.expanduser(constants.HF_HUB_CACHE)):
        return []
    return ["--cache-dir", str(spec.cache_dir)]


def hf_cli(verb: str) -> str:
    """The installed huggingface_hub's command for ``verb``: ``hf`` (>= 0.34), else ``huggingface-cli``."""
    if importlib.util.find_spec("huggingface_hub.cli") is not None:
        return f"hf auth {verb}" if verb == "login" else f"hf {verb}"
    return f"huggingface-cli {verb}"


def fetch_command(spec: HubSpec, files: list[str] | None) -> str:
    words = [*hf_cli("download").split(), spec.repo_id]
    if files:
        words += files
    elif spec.filename:
        words.append(spec.filename)
    else:
        patterns = _guessed_patterns(spec)
        if words[0] == "hf":
            for pattern in patterns:
                words += ["--include", pattern]
        elif patterns:  # huggingface-cli keeps only the last --include: one flag, several patterns
            words += ["--include", *patterns]
    if spec.revision:
        words += ["--revision", spec.revision]
    words += _custom_cache(spec)
    return " ".join(shlex.quote(w) for w in words)


def _guessed_patterns(spec: HubSpec) -> list[str]:
    """Without the repo's listing: the configs and the safetensors of the variant asked for.

    Patterns of ``hf download --include`` match across ``/``: at the root they cover a pipeline's
    components too, and no subfolder is guessed.
    """
    where = f"{spec.directory}/" if spec.directory else ""
    weights = f"*.{spec.variant}*.safetensors" if spec.variant else "*.safetensors"
    patterns = [f"{where}*.json", where + weights]
    base = posixpath.basename(spec.directory)
    if base.startswith("text_encoder"):
        parent = posixpath.dirname(spec.directory)
        tokenizer = base.replace("text_encoder", "tokenizer", 1)
        patterns += [f"{where}*.model", f"{parent + '/' if parent else ''}{tokenizer}/*"]
    elif not spec.directory:
        patterns += ["*.model", "*.txt"]
    return patterns


def ckptkit_command(spec: HubSpec) -> str:
    words = ["ckptkit", "resolve", spec.label]
    if spec.revision:
        words += ["--revision", spec.revision]
    if spec.variant:
        words += ["--variant", spec.variant]
    words += _custom_cache(spec)
    return " ".join(shlex.quote(w) for w in words)


def resume_fix(spec: HubSpec, commit: str, missing: list[str] | None) -> str:
    incomplete = list((spec.storage / "blobs").glob("*.incomplete"))
    # huggingface_hub restarts a file rather than resuming another process's *.incomplete.
    note = (
        f" ({len(incomplete)} interrupted downloads left *.incomplete files in {spec.storage / 'blobs'}; "
        "they are not reused and can be deleted)"
        if incomplete
        else ""
    )
    return (
        f"download the missing files again{note}: `{fetch_command(spec, missing)}` "
        f"or `{ckptkit_command(spec)}` while online"
    )


def offline_miss(spec: HubSpec, miss: CacheMiss, *, env_offline: bool) -> CkptError:
    """The typed error for a file the cache lacks while downloads are off, saying where it looked."""
    why = "HF_HUB_OFFLINE=1" if env_offline else "local_files_only=True"
    looked = "; ".join(dict.fromkeys(spec.looked))
    if miss.error is not None:
        exc = miss.error
        detail = f"{exc.detail.rstrip('.')}; looked in: {looked}; downloads are off ({why})"
        extra = f"fetch with: `{fetch_command(spec, None)}`"
        return type(exc)(detail, path=exc.path, fix=f"{exc.fix}; or {extra}" if exc.fix else extra)
    if miss.commit is not None and miss.missing and miss.listed and miss.none_here:
        return CheckpointNotFoundError(
            f"{spec.label} (revision {spec.revision or 'main'}) was never downloaded: none of its "
            f"files is in the hub cache, and downloads are off ({why}); looked in: {looked}",
            path=spec.storage / "snapshots" / miss.commit / (spec.filename or spec.directory),
            fix=f"fetch it with: `{fetch_command(spec, miss.missing)}`",
        )
    if miss.commit is not None and miss.missing and miss.listed:
        where = "the cache" if len(spec.caches) == 1 else "any of the caches"
        return IncompleteCheckpointError(
            f"{len(miss.missing)} needed files are not in {where} and downloads are off ({why}): "
            + ", ".join(miss.missing)
            + f"; looked in: {looked}",
            path=spec.storage / "snapshots" / miss.commit,
            fix=resume_fix(spec, miss.commit, miss.missing),
        )
    return CheckpointNotFoundError(
        f"{spec.label} (revision {spec.revision or 'main'}) is not in the hub cache and downloads are off "
        f"({why}); looked in: {looked}",
        path=spec.storage,
        fix=f"fetch it with: `{fetch_command(spec, miss.missing or None)}` "
        f"(or `{ckptkit_command(spec)}` while online, which fetches only the files needed)",
    )
