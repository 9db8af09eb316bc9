"""Patching an installed ``opensora`` package so its own scripts load through ckptkit."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from ckptkit.shims._patch import Patches
from ckptkit.shims.opensora._ckpt import find_model, load_checkpoint, load_checkpoint_v2
from ckptkit.shims.opensora._models import T5Encoder, VideoAutoencoderKL
from ckptkit.shims.opensora._pretrained import HFEmbedder, from_pretrained

__all__ = ["install", "installed", "uninstall"]

#: upstream module -> {name: the shim that replaces it}. Open-Sora 1.2/1.3 have ckpt_utils, 2.0 has ckpt.
TARGETS: dict[str, dict[str, Any]] = {
    "opensora.utils.ckpt_utils": {"load_checkpoint": load_checkpoint, "find_model": find_model},
    "opensora.utils.ckpt": {"load_checkpoint": load_checkpoint_v2},
    "opensora.models.text_encoder.t5": {"T5Encoder": T5Encoder},
    "opensora.models.vae.vae": {"VideoAutoencoderKL": VideoAutoencoderKL},
    "opensora.models.text.conditioner": {"HFEmbedder": HFEmbedder},
}

#: upstream module -> its transformers ``PreTrainedModel`` classes whose ``from_pretrained`` the
#: hub-id builders call (``STDiT3_XL_2(from_pretrained="hpcai-tech/OpenSora-STDiT-v3")``, ...).
PRETRAINED_CLASSES: dict[str, tuple[str, ...]] = {
    "opensora.models.stdit.stdit3": ("STDiT3",),
    "opensora.models.vae.vae": ("VideoAutoencoderPipeline",),
}

_CLASS_PATCHES = Patches("opensora")
#: ``module.Class`` of each class whose from_pretrained is patched, while installed.
_patched_classes: list[str] = []


def _class_from_pretrained(cls: type, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
    return from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs)


def _class_names() -> list[str]:
    return [
        f"{module_name}.{name}"
        for module_name, names in PRETRAINED_CLASSES.items()
        if module_name in sys.modules
        for name in names
        if getattr(sys.modules[module_name], name, None) is not None
    ]


def _class_targets() -> list[tuple[Any, str, Any]]:
    targets: list[tuple[Any, str, Any]] = []
    for module_name, class_names in PRETRAINED_CLASSES.items():
        module = _import(module_name)
        for name in class_names if module is not None else ():
            cls = getattr(module, name, None)
            if cls is not None:
                targets.append((cls, "from_pretrained", classmethod(_class_from_pretrained)))
    return targets


_lock = threading.Lock()
#: (the upstream object, its shim) for each name patched, while installed.
_patched: list[tuple[Any, Any]] = []


def install() -> list[str]:
    """Replace the loader functions of the importable ``opensora`` package with the shims, in place.

    ``opensora.utils.ckpt_utils.load_checkpoint`` (1.2/1.3), ``opensora.utils.ckpt.load_checkpoint``
    (2.0), ``T5Encoder`` and ``VideoAutoencoderKL`` (1.x) and ``HFEmbedder`` (2.0) are replaced
    where they exist: in their module, in every imported ``opensora.*`` module that imported them by
    name (the model builders did ``from opensora.utils.ckpt_utils import load_checkpoint``), and in
    the model registry. The ``from_pretrained`` of ``STDiT3`` and ``VideoAutoencoderPipeline``
    (what the 1.x builders call with a hub id) becomes :func:`from_pretrained`. Modules imported
    afterwards import the shims. Calling it again changes nothing.

    Returns:
        The patched names, ``"module.name"`` (``"module.Class.from_pretrained"`` for a class).

    Raises:
        ModuleNotFoundError: no ``opensora`` package can be imported, or it has none of the targets.

    Example:
        >>> import ckptkit.shims.opensora as shim
        >>> shim.install()  # doctest: +SKIP
        ['opensora.utils.ckpt_utils.load_checkpoint', ...]
    """
    with _lock:
        if _patched or _patched_classes:
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
        classes = _class_targets()
        if not replacements and not classes:
            raise ModuleNotFoundError(
                "ckptkit.shims.opensora.install(): the importable 'opensora' package has none of "
                + ", ".join(
                    [f"{m}.{n}" for m, names in TARGETS.items() for n in names]
                    + [f"{m}.{c}" for m, names in PRETRAINED_CLASSES.items() for c in names]
                ),
                name="opensora",
            )
        _swap(dict(replacements))
        _patched.extend(replacements)
        _CLASS_PATCHES.install(lambda: classes)
        _patched_classes.extend(_class_names())
        return _names()


def uninstall() -> None:
    """Put back what :func:`install` replaced (in every ``opensora.*`` module, imported since or not).

    Example:
        >>> shim.uninstall()  # doctest: +SKIP
    """
    with _lock:
        _swap({shim: original for original, shim in _patched})
        _patched.clear()
        _CLASS_PATCHES.uninstall()
        _patched_classes.clear()


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
    functions = {
        f"{module.__name__}.{name}"
        for module in _opensora_modules()
        for name, value in vars(module).items()
        if any(value is shim for _, shim in _patched)
    }
    classes = {f"{where}.from_pretrained" for where in _patched_classes}
    return sorted(functions | classes)


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
