"""``install()``: Wan's own ``generate.py`` on ckptkit."""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from ckptkit.shims._patch import Patches
from ckptkit.shims.wan._checkpoint import _wan
from ckptkit.shims.wan._clip import _clip_init
from ckptkit.shims.wan._dit import load_dit
from ckptkit.shims.wan._t5 import _t5_init
from ckptkit.shims.wan._vae import _vae_module, _video_vae_in

__all__ = ["install", "installed", "uninstall"]

_PATCHES = Patches("wan")
#: What ``WanModel.from_pretrained`` takes from Wan's call sites (anything else raises ``TypeError``).
_DIT_KWARGS = ("subfolder", "torch_dtype", "device_map")


def _dit_from_pretrained(cls: type, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
    unsupported = sorted(set(kwargs) - set(_DIT_KWARGS))
    if args or unsupported:
        raise TypeError(
            f"{cls.__name__}.from_pretrained (ckptkit) got unsupported arguments: "
            f"{[*map(repr, args), *unsupported]}"
        )
    return load_dit(pretrained_model_name_or_path, cls, **kwargs)


def _targets(package: str, dit_classes: Sequence[type]) -> list[tuple[Any, str, Any]]:
    model, t5 = _wan(f"{package}.modules.model"), _wan(f"{package}.modules.t5")
    vae2_1 = _vae_module("2.1", package)
    targets = [
        (model.WanModel, "from_pretrained", classmethod(_dit_from_pretrained)),
        (t5.T5EncoderModel, "__init__", _t5_init),
        (vae2_1, "_video_vae", _video_vae_in(vae2_1, "2.1")),
    ]
    # Wan2.2 only: its 2.2 VAE, and the DiT classes that are not WanModel subclasses (S2V, Animate);
    # the CLIP image encoder: modules.clip in Wan2.1, modules.animate.clip in Wan2.2
    for module_name, attr in [
        ("modules.clip", "CLIPModel"),
        ("modules.animate.clip", "CLIPModel"),
        ("modules.vae2_2", "_video_vae"),
        ("modules.s2v.model_s2v", "WanModel_S2V"),
        ("modules.animate.model_animate", "WanAnimateModel"),
    ]:
        try:
            module = importlib.import_module(f"{package}.{module_name}")
        except ImportError:
            continue
        if attr == "_video_vae":
            targets.append((module, attr, _video_vae_in(module, "2.2")))
        elif attr == "CLIPModel":
            targets.append((module.CLIPModel, "__init__", _clip_init))
        else:
            targets.append((getattr(module, attr), "from_pretrained", classmethod(_dit_from_pretrained)))
    for cls in dit_classes:
        if not isinstance(cls, type) or not hasattr(cls, "from_pretrained"):
            raise TypeError(f"dit_classes: {cls!r} is not a DiT class with from_pretrained")
        targets.append((cls, "from_pretrained", classmethod(_dit_from_pretrained)))
    return targets


def install(package: str = "wan", *, dit_classes: Sequence[type] = ()) -> None:
    """Make the installed Wan load through ckptkit, its own code (``generate.py``, ``wan.WanT2V``...) unchanged.

    Patches ``from_pretrained`` of ``WanModel``, ``WanModel_S2V`` and ``WanAnimateModel``,
    ``T5EncoderModel.__init__``, ``CLIPModel.__init__`` and ``_video_vae`` of ``modules.vae2_1`` / ``vae2_2`` (what
    ``Wan2_1_VAE`` / ``Wan2_2_VAE`` call; Wan2.1's ``modules.vae`` for its ``WanVAE``). Installing
    while installed is a no-op; :func:`uninstall` restores them.

    Args:
        package: the Wan package to patch: ``"wan"``, or a vendored copy such as Live Avatar's
            ``"liveavatar.models.wan.wan_2_2"``.
        dit_classes: more DiT classes whose ``from_pretrained`` loads through ckptkit (their
            ``config.json`` + safetensors, as :func:`load_dit`): those a project defines outside the
            Wan package, such as Live Avatar's ``CausalWanModel_S2V``.

    Raises:
        ImportError: that package is not installed.
        TypeError: an entry of ``dit_classes`` is no class with ``from_pretrained`` (nothing is patched).
    """
    _PATCHES.install(lambda: _targets(package, dit_classes))


def uninstall() -> None:
    """Put Wan's own loaders back (a no-op when :func:`install` was not called)."""
    _PATCHES.uninstall()


@contextmanager
def installed(package: str = "wan", *, dit_classes: Sequence[type] = ()) -> Iterator[None]:
    """:func:`install` for the ``with`` block, :func:`uninstall` after it (even on error)."""
    was = _PATCHES.installed
    install(package, dit_classes=dit_classes)
    try:
        yield
    finally:
        if not was:
            uninstall()
