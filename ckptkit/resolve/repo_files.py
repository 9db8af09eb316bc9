"""Which files of a hub repo a component needs, decided from the repo's file listing alone.

Pure names: no I/O beyond what :func:`ckptkit.format.discover_weight_sets` does on paths that may not
exist yet, no huggingface_hub. The variant rules are :func:`ckptkit.format.select_weight_set`'s.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ckptkit.errors import CheckpointNotFoundError
from ckptkit.format.components import CONFIG_NAME, MODEL_INDEX_NAME, choose_components
from ckptkit.format.layout import Selection, WeightSet, discover_weight_sets, select_weight_set
from ckptkit.format.naming import parse_index_filename, parse_weight_filename

__all__ = [
    "TOKENIZER_FILENAMES",
    "DownloadPlan",
    "parse_cache_path",
    "parse_repo_spec",
    "plan_files",
    "plan_pipeline",
]

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
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]*[A-Za-z0-9_]$")


@dataclass
class DownloadPlan:
    """The repo files a checkpoint needs (``files``) and the weight set chosen from the listing.

    ``optional`` files are fetched with them but not required in the cache (a component's
    ``model_index.json``); ``components`` names the pipeline components planned, if any.
    """

    files: list[str]
    selection: Selection | None = None
    optional: list[str] = field(default_factory=list)
    components: list[str] | None = None


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
        The plan: config, selected index and shards, tokenizer files (text encoders); a pipeline
        component's ``model_index.json`` is optional (fetched, not required).

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
    optional = [MODEL_INDEX_NAME] if directory and MODEL_INDEX_NAME in files else []
    return DownloadPlan(sorted(set(needed)), selection, optional)


def plan_pipeline(
    listing: Iterable[str],
    *,
    names: list[str],
    components: list[str] | None = None,
    snapshot: Path,
    variant: str | None = None,
    variant_fallback: str = "warn",
    label: str = "",
) -> DownloadPlan | None:
    """The repo files a whole pipeline needs: ``model_index.json``, and per component its plan.

    A component folder holding weights gets :func:`plan_files`' minimum (the chosen variant only);
    a folder without weights (``scheduler/``, ``tokenizer/``) comes whole. Weights files at the
    repo's root are left out.

    Args:
        listing: every file path in the repo.
        names: the components ``model_index.json`` names.
        components: only these components (``components=``); ``None`` for all.
        snapshot, variant, variant_fallback, label: as for :func:`plan_files`.

    Returns:
        The plan, or ``None`` when no component folder holds weights (the root is one model).

    Example:
        >>> listing = ["model_index.json", "vae/config.json", "vae/diffusion_pytorch_model.safetensors"]
        >>> plan_pipeline(listing, names=["vae"], snapshot=Path("s")).files
        ['model_index.json', 'vae/config.json', 'vae/diffusion_pytorch_model.safetensors']
    """
    files = sorted(set(listing))
    chosen = choose_components(names, components, where=label)
    needed = [MODEL_INDEX_NAME]
    planned = []
    for name in chosen:
        under = [f for f in files if f.startswith(name + "/")]
        here = [posixpath.basename(f) for f in under if posixpath.dirname(f) == name]
        if _sets_from_names(here, snapshot / name):
            plan = plan_files(
                files,
                directory=name,
                snapshot=snapshot,
                variant=variant,
                variant_fallback=variant_fallback,
                label=label,
            )
            needed += plan.files
            planned.append(name)
        else:
            needed += under
    if not planned and components is None:
        return None
    return DownloadPlan(sorted(set(needed)), components=planned)


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
