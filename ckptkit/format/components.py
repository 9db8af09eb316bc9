"""Pipeline layouts: ``model_index.json`` and the component subfolders it names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ckptkit.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    IncompleteCheckpointError,
    UnsafeCheckpointError,
)
from ckptkit.format.safe_files import quote_content, read_capped
from ckptkit.format.strict_json import loads_strict

__all__ = [
    "MODEL_INDEX_NAME",
    "Component",
    "check_component_name",
    "check_subfolder",
    "choose_components",
    "components_not_here",
    "pipeline_components",
    "read_json_object",
    "read_model_index",
    "select_components",
]

MODEL_INDEX_NAME = "model_index.json"
CONFIG_NAME = "config.json"
#: Configs and ``model_index.json`` are a few kilobytes; anything past this is not one.
MAX_JSON_SIZE = 16 * 2**20


@dataclass(frozen=True)
class Component:
    """One entry of ``model_index.json``: ``"vae": ["diffusers", "AutoencoderKL"]``."""

    name: str
    library: str | None
    class_name: str | None


def read_json_object(path: str | os.PathLike[str]) -> dict[str, object]:
    """Read a small JSON file that must hold an object (a config or ``model_index.json``).

    Raises:
        CorruptCheckpointError: not JSON, or not an object.
    """
    path = Path(path)
    try:
        parsed = loads_strict(read_capped(path, MAX_JSON_SIZE, what="JSON file"))
    except (ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(f"is not valid JSON ({exc})", path=path) from None
    if not isinstance(parsed, dict):
        raise CorruptCheckpointError("does not hold a JSON object", path=path)
    return parsed


def check_component_name(name: str, where: str | os.PathLike[str]) -> None:
    """Refuse a component (subfolder) name that is not one plain folder name (see
    :func:`choose_components`): ``"../x"``, ``"a/b"``, ``"."`` or an absolute path would climb out
    of the pipeline or name something else than its own subfolder.

    Raises:
        UnsafeCheckpointError: naming ``where`` and the name (quoted, shortened).
    """
    if not _is_plain_name(name):
        raise UnsafeCheckpointError(
            f"component name {quote_content(name)} is not a plain folder name; it is ignored",
            path=where,
            fix="model_index.json may only name subfolders of the pipeline directory",
        )


def check_subfolder(subfolder: str, where: str | os.PathLike[str]) -> None:
    """Refuse a ``subfolder`` that is not a relative path of plain folder names (``"vae"``, ``"a/b"``).

    Raises:
        ValueError: naming the argument (it is the caller's, not the checkpoint's).
    """
    parts = subfolder.replace("\\", "/").split("/")
    if subfolder.startswith(("/", "\\")) or any(p in ("", ".", "..") or "\0" in p for p in parts):
        raise ValueError(
            f"subfolder={quote_content(subfolder)} must be a relative path of folder names inside {os.fspath(where)!r} "
            "(no '..', no absolute path)"
        )


def pipeline_components(directory: str | os.PathLike[str]) -> list[Component] | None:
    """The one answer to "is this directory a pipeline?": the components its ``model_index.json``
    names, or ``None`` when it is not a pipeline.

    A directory is a pipeline when it holds an entry named ``model_index.json`` -- a file, or a link
    (a dangling one is a pipeline whose index is missing, not a plain model); a hub repo is one when
    its root lists that file. Every caller asks here: resolution (local directories and downloaded
    snapshots, so ``load``, ``resave``, ``plan`` and ``materialize``), ``inspect``/``verify``, the
    adapters choosing their component, and the hints that say "this is a pipeline; pass subfolder=".
    The components are the entries naming ``[library, class]``, in name order; whether each is a
    plain folder name is :func:`choose_components`' and :func:`check_component_name`'s to judge.

    Raises:
        IncompleteCheckpointError: ``model_index.json`` is a dangling link.
        CorruptCheckpointError: it is not a JSON object (or not a file).

    Example:
        >>> [c.name for c in pipeline_components("pixart")]  # doctest: +SKIP
        ['scheduler', 'text_encoder', 'tokenizer', 'transformer', 'vae']
    """
    path = Path(directory) / MODEL_INDEX_NAME
    if not os.path.lexists(path):
        return None
    parsed = read_json_object(path)
    components = []
    for key, value in sorted(parsed.items()):
        if key.startswith("_"):
            continue
        if isinstance(value, list) and len(value) == 2:
            library, class_name = value
            components.append(
                Component(
                    key,
                    library if isinstance(library, str) else None,
                    class_name if isinstance(class_name, str) else None,
                )
            )
    return components


#: The name this helper had; kept for ``ckptkit.format.read_model_index`` (deprecated).
read_model_index = pipeline_components


def _is_plain_name(name: str) -> bool:
    return (
        bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name
    )


def choose_components(
    names: list[str], requested: list[str] | str | None = None, *, where: str | os.PathLike[str] | None = None
) -> list[str]:
    """The component folders to use: every plain name of ``names``, or those of ``requested``.

    This is the one place component names are judged: a name from ``model_index.json`` that is not
    one plain folder name (``"../x"``, ``"a/b"``) is never used as a path.

    Args:
        names: the components ``model_index.json`` names.
        requested: ``components=``: a name or a list of names; ``None`` for all.
        where: the pipeline, for messages.

    Raises:
        CheckpointNotFoundError: a requested name is not a component of the pipeline.

    Example:
        >>> choose_components(["scheduler", "vae", "../x"], ["vae"])
        ['vae']
    """
    plain = [n for n in names if _is_plain_name(n)]
    if requested is None:
        return plain
    wanted = [requested] if isinstance(requested, str) else list(requested)
    unknown = [n for n in wanted if n not in plain]
    if unknown:
        raise CheckpointNotFoundError(
            "not a component of this pipeline: " + ", ".join(map(repr, unknown)),
            path=where,
            fix="pass components= some of: " + ", ".join(plain),
        )
    return list(dict.fromkeys(wanted))


def components_not_here(directory: str | os.PathLike[str], absent: list[str]) -> IncompleteCheckpointError:
    """The error for components ``model_index.json`` names whose folders are not in ``directory``."""
    return IncompleteCheckpointError(
        f"{MODEL_INDEX_NAME} names components that are not here: " + ", ".join(absent),
        path=directory,
        fix="download them too (or pass components= the ones you need)",
    )


def select_components(directory: str | os.PathLike[str], requested: list[str] | str) -> list[str]:
    """``components=`` on a local directory: the component folders it picks, each one present.

    The one rule every verb taking ``components=`` follows (``resolve_ckpt_dir``, so ``resave``,
    and ``materialize``): the directory must be a pipeline (:func:`pipeline_components`), each name
    one of its components (:func:`choose_components`), and each folder there.

    Raises:
        CheckpointNotFoundError: not a pipeline, or a name that is not one of its components (the
            fix names those there are).
        IncompleteCheckpointError: ``model_index.json`` is a dangling link, or names a requested
            component whose folder is not here.
        CorruptCheckpointError: ``model_index.json`` is not a JSON object.

    Example:
        >>> select_components("pixart", ["vae", "transformer"])  # doctest: +SKIP
        ['vae', 'transformer']
    """
    index = pipeline_components(directory)
    if index is None:
        raise CheckpointNotFoundError(
            f"components={requested!r} was given but this is not a pipeline (no {MODEL_INDEX_NAME})",
            path=directory,
            fix="leave out components=, or point at the pipeline's root directory",
        )
    chosen = choose_components([c.name for c in index], requested, where=directory)
    absent = [name for name in chosen if not (Path(directory) / name).is_dir()]
    if absent:
        raise components_not_here(directory, absent)
    return chosen
