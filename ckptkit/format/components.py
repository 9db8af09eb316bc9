"""Pipeline layouts: ``model_index.json`` and the component subfolders it names."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ckptkit.errors import CheckpointNotFoundError, CorruptCheckpointError
from ckptkit.format.strict_json import loads_strict

__all__ = [
    "MODEL_INDEX_NAME",
    "Component",
    "choose_components",
    "read_json_object",
    "read_model_index",
]

MODEL_INDEX_NAME = "model_index.json"
CONFIG_NAME = "config.json"


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
        parsed = loads_strict(path.read_bytes())
    except (ValueError, RecursionError) as exc:
        raise CorruptCheckpointError(f"is not valid JSON ({exc})", path=path) from None
    if not isinstance(parsed, dict):
        raise CorruptCheckpointError("does not hold a JSON object", path=path)
    return parsed


def read_model_index(directory: str | os.PathLike[str]) -> list[Component] | None:
    """The components a pipeline directory names, or ``None`` when it has no ``model_index.json``.

    Example:
        >>> [c.name for c in read_model_index("pixart")]  # doctest: +SKIP
        ['scheduler', 'text_encoder', 'tokenizer', 'transformer', 'vae']
    """
    path = Path(directory) / MODEL_INDEX_NAME
    if not path.is_file():
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
