"""torch pickle files (``.bin/.pt/.pth/.ckpt``), always with ``weights_only=True``."""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import torch

from ckptkit.errors import CorruptCheckpointError, UnsafeCheckpointError
from ckptkit.format.safe_files import held_path, open_regular_file, quote_content
from ckptkit.format.torch_pickle import scan_torch_file

__all__ = ["WRAPPER_KEYS", "find_wrappers", "load_torch_file", "unwrap_state_dict"]

#: Keys training code nests a state dict under.
WRAPPER_KEYS = ("state_dict", "model", "module", "ema", "model_ema", "ema_model")


def load_torch_file(path: str | os.PathLike[str], *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")`` with ckptkit's errors.

    Args:
        path: the file.
        mmap: map the storages from the file instead of reading them (zip-format files only).

    Raises:
        UnsafeCheckpointError: the pickle needs globals that ``weights_only`` refuses (it may run
            code); nothing of it is executed.
        CorruptCheckpointError: not a torch file, or a damaged one.
        IncompleteCheckpointError: the file is missing or unreadable.
    """
    path = Path(path)
    with open_regular_file(path) as handle:
        return _load_open(path, handle, mmap=mmap)


def _load_open(path: Path, handle: BinaryIO, *, mmap: bool) -> Any:
    use_mmap = mmap and zipfile.is_zipfile(handle)
    handle.seek(0)
    if use_mmap:
        # torch maps each storage at its record's offset without checking the record's size: a
        # short record would be read past its end, into the next entries. The scan checks sizes.
        scan_torch_file(path)
    try:
        if use_mmap:
            # torch maps by name: name the file held open (checked), not the path again.
            return torch.load(
                held_path(handle.fileno(), path), map_location="cpu", weights_only=True, mmap=True
            )
        return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        if "weights_only" in text or "Unsupported global" in text or "Unsupported operand" in text:
            first = text.strip().splitlines()[0] if text.strip() else "unsupported content"
            raise UnsafeCheckpointError(
                f"refused to unpickle: it needs more than plain tensors ({first[:300]})",
                path=path,
                fix="convert it to safetensors in a trusted environment, or load only files you trust "
                "with torch.load(weights_only=False) yourself",
            ) from None
        raise CorruptCheckpointError(f"not a readable torch file ({text[:300]})", path=path) from None
    except RecursionError:
        raise CorruptCheckpointError(
            "the pickle nests objects too deeply to be a state dict",
            path=path,
            fix="check where it came from",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, KeyError, OSError) as exc:
        raise CorruptCheckpointError(
            f"not a readable torch file ({type(exc).__name__}: {str(exc)[:300]})",
            path=path,
            fix="the file is truncated or damaged; download or copy it again",
        ) from None


def find_wrappers(obj: Any) -> list[str]:
    """The wrapper keys of :data:`WRAPPER_KEYS` that ``obj`` holds a nested dict under."""
    if not isinstance(obj, Mapping):
        return []
    return [k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)]


def unwrap_state_dict(
    obj: Any, unwrap: str | bool | None, path: str | os.PathLike[str]
) -> dict[str, torch.Tensor]:
    """The tensors of a loaded torch file, unwrapping ``{"state_dict": ...}`` only when asked.

    Args:
        obj: what :func:`load_torch_file` returned.
        unwrap: ``None``/``False``: take ``obj`` as the state dict; a key (``"ema"``): take that
            entry; ``True``: the first of :data:`WRAPPER_KEYS` present.
        path: the file, for messages.

    Raises:
        CorruptCheckpointError: the result holds no tensors, or the key asked for is absent.
    """
    if not isinstance(obj, Mapping):
        raise CorruptCheckpointError(f"holds a {type(obj).__name__}, not a state dict", path=path)
    wrappers = find_wrappers(obj)
    if unwrap:
        key = wrappers[0] if unwrap is True and wrappers else unwrap
        if not isinstance(key, str) or not isinstance(obj.get(key), Mapping):
            raise CorruptCheckpointError(
                f"has no {unwrap!r} entry to unwrap; top-level keys: {sorted(map(str, obj))[:10]}",
                path=path,
                fix=f"pass unwrap= one of {wrappers}" if wrappers else "pass unwrap=None",
            )
        obj = obj[key]
    odd = [k for k in obj if not isinstance(k, str)]
    if odd:
        raise CorruptCheckpointError(
            f"state dict has {len(odd)} keys that are not strings (first: {quote_content(repr(odd[0]))})",
            path=path,
            fix="re-save it with string keys (the names of the parameters)",
        )
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors and wrappers:
        raise CorruptCheckpointError(
            f"its tensors are nested under {wrappers}",
            path=path,
            fix=f"pass unwrap={wrappers[0]!r}",
        )
    if not tensors:
        nested = [str(k) for k, v in obj.items() if isinstance(v, Mapping)]
        raise CorruptCheckpointError(
            "holds no tensors"
            + (f"; dicts are nested under {[quote_content(k) for k in nested[:5]]}" if nested else "")
            + f" (top-level keys: {[quote_content(str(k)) for k in list(obj)[:5]]})",
            path=path,
            fix=f"pass unwrap={nested[0]!r} if the weights are there"
            if nested
            else "this is not a weights file",
        )
    return tensors
