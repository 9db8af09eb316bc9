"""Patching an installed ``opensora`` package so its own scripts load through ckptkit."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from ckptkit.shims.opensora._ckpt import find_model, load_checkpoint, load_checkpoint_v2
from ckptkit.shims.opensora._models import T5Encoder, VideoAutoencoderKL

__all__ = ["install", "installed", "uninstall"]

#: upstream module -> {name: the shim that replaces it}. Open-Sora 1.2/1.3 have ckpt_utils, 2.0 has ckpt.
TARGETS: dict[str, dict[str, Any]] = {
    "opensora.utils.ckpt_utils": {"load_checkpoint": load_checkpoint, "find_model": find_model},
    "opensora.utils.ckpt": {"load_checkpoint": load_checkpoint_v2},
    "opensora.models.text_encoder.t5": {"T5Encoder": T5Encoder},
    "opensora.models.vae.vae": {"VideoAutoencoderKL": VideoAutoencoderKL},
}

_lock = threading.Lock()
#: (the upstream object, its shim) for each name patched, while installed.
_patched: list[tuple[Any, Any]] = []


def install() -> list[str]:
    """Replace the loader functions of the importable ``opensora`` package with the shims, in place.

    ``opensora.utils.ckpt_utils.load_checkpoint`` (1.2/1.3), ``opensora.utils.ckpt.load_checkpoint``
    (2.0), ``T5Encoder`` and ``VideoAutoencoderKL`` (1.x) are replaced where they exist: in their
    module, in every imported ``opensora.*`` module that imported them by name (the model builders
    did ``from opensora.utils.ckpt_utils import load_checkpoint``), and in the model registry. Modules
    imported afterwards import the shims. Calling it again changes nothing.

    Returns:
        The patched names, ``"module.name"``.

    Raises:
        ModuleNotFoundError: no ``opensora`` package can be imported, or it has none of the targets.

    Example:
        >>> import ckptkit.shims.opensora as shim
        >>> shim.install()  # doctest: +SKIP
        ['opensora.utils.ckpt_utils.load_checkpoint', ...]
    """
    with _lock:
        if _patched:
            return _names()
        replacements: list[tuple[Any, Any]] = []
        for module_name, names in TARGETS.items():
            module = _import(module_name)
            if module is None:
                continue
            for name, shim in names.items():
                original = getattr(module, name, None)
                if original is not None and original is not shim:
                    replacements.append((original, shim))
        if not replacements:
            raise ModuleNotFoundError(
                "ckptkit.shims.opensora.install(): the importable 'opensora' package has none of "
                + ", ".join(f"{m}.{n}" for m, names in TARGETS.items() for n in names),
                name="opensora",
            )
        _swap(dict(replacements))
        _patched.extend(replacements)
        return _names()


def uninstall() -> None:
    """Put back what :func:`install` replaced (in every ``opensora.*`` module, imported since or not).

    Example:
        >>> shim.uninstall()  # doctest: +SKIP
    """
    with _lock:
        _swap({shim: original for original, shim in _patched})
        _patched.clear()


@contextmanager
def installed() -> Iterator[list[str]]:
    """:func:`install` for the ``with`` block, :func:`uninstall` after it (also on errors).

    Example:
        >>> with shim.installed():  # doctest: +SKIP
        ...     model = build_module(cfg.model, MODELS)
    """
    names = install()
    try:
        yield names
    finally:
        uninstall()


def _names() -> list[str]:
    return sorted(
        f"{module.__name__}.{name}"
        for module in _opensora_modules()
        for name, value in vars(module).items()
        if any(value is shim for _, shim in _patched)
    )


def _import(module_name: str) -> ModuleType | None:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # Only the module itself (or a parent) being absent means "not this version"; a missing
        # dependency of a module that exists is the user's to see.
        if exc.name is not None and module_name.startswith(exc.name):
            return None
        raise


def _opensora_modules() -> list[ModuleType]:
    return [
        module
        for name, module in list(sys.modules.items())
        if isinstance(module, ModuleType) and (name == "opensora" or name.startswith("opensora."))
    ]


def _swap(mapping: dict[Any, Any]) -> None:
    """Replace, by identity, every global of the ``opensora.*`` modules (and registry entries) in ``mapping``."""
    for module in _opensora_modules():
        namespace = vars(module)
        for name, value in list(namespace.items()):
            for old, new in mapping.items():
                if value is old:
                    namespace[name] = new
                    break
            else:
                _swap_registry(value, mapping)


def _swap_registry(value: object, mapping: dict[Any, Any]) -> None:
    # Open-Sora's MODELS is an mmengine Registry; builders look classes up in its _module_dict.
    entries = getattr(value, "_module_dict", None)
    if not isinstance(entries, dict):
        return
    for key, entry in list(entries.items()):
        for old, new in mapping.items():
            if entry is old:
                entries[key] = new
                break
