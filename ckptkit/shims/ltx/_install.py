"""``install()``: LTX-Video's own code path (``ltx_video.inference``) on ckptkit."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ckptkit.io.tensors import to_torch_dtype
from ckptkit.shims._patch import Patches
from ckptkit.shims.ltx._models import (
    _diffusers_transformer,
    _local_directory,
    _ltx,
    create_transformer,
    load_component,
    load_scheduler,
    load_vae,
)
from ckptkit.shims.ltx._pipeline import create_ltx_video_pipeline
from ckptkit.shims.ltx._upsampler import create_latent_upsampler, hf_hub_download, load_latent_upsampler

__all__ = ["install", "installed", "uninstall"]

_PATCHES = Patches("ltx_video")


def _transformer_from_pretrained(cls: type, pretrained_model_path: Any, *args: Any, **kwargs: Any) -> Any:
    # LTX-Video's create_transformer passes dtype=float8_e4m3fn, which its from_pretrained ignores
    # (an fp8 release is stored in fp8): honoured here as "must already be stored so".
    dtype = kwargs.pop("dtype", None)
    if args or kwargs:
        raise TypeError(
            f"Transformer3DModel.from_pretrained (ckptkit) got unsupported arguments: "
            f"{[*map(repr, args), *sorted(kwargs)]}"
        )
    directory = _local_directory(pretrained_model_path)
    if directory is not None:
        model = _diffusers_transformer(directory, cls)
    else:
        model = load_component(pretrained_model_path, "transformer", cls).train()
    if dtype is not None:
        stored = {t.dtype for t in model.parameters() if t.is_floating_point()}
        if stored != {to_torch_dtype(dtype)}:
            raise ValueError(
                f"dtype={dtype} but the checkpoint stores {sorted(map(str, stored))}: LTX-Video loads "
                "the stored dtype (cast the model afterwards)"
            )
    return model


def _vae_from_pretrained(cls: type, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
    torch_dtype = kwargs.pop("torch_dtype", None)
    if args or kwargs:
        raise TypeError(
            f"CausalVideoAutoencoder.from_pretrained (ckptkit) got unsupported arguments: "
            f"{[*map(repr, args), *sorted(kwargs)]}"
        )
    return load_vae(pretrained_model_name_or_path, torch_dtype=torch_dtype, model_class=cls)


def _upsampler_from_pretrained(cls: type, pretrained_model_path: Any, *args: Any, **kwargs: Any) -> Any:
    if args or kwargs:
        raise TypeError(
            f"LatentUpsampler.from_pretrained (ckptkit) got unsupported arguments: "
            f"{[*map(repr, args), *sorted(kwargs)]}"
        )
    return load_latent_upsampler(pretrained_model_path, model_class=cls)


def _targets() -> list[tuple[Any, str, Any]]:
    inference = _ltx("ltx_video.inference")
    transformer = _ltx("ltx_video.models.transformers.transformer3d.Transformer3DModel")
    vae = _ltx("ltx_video.models.autoencoders.causal_video_autoencoder.CausalVideoAutoencoder")
    scheduler = _ltx("ltx_video.schedulers.rf.RectifiedFlowScheduler")
    upsampler = _ltx("ltx_video.models.autoencoders.latent_upsampler.LatentUpsampler")
    return [
        (inference, "hf_hub_download", hf_hub_download),
        (inference, "create_transformer", create_transformer),
        (inference, "create_ltx_video_pipeline", create_ltx_video_pipeline),
        (inference, "create_latent_upsampler", create_latent_upsampler),
        (upsampler, "from_pretrained", classmethod(_upsampler_from_pretrained)),
        (transformer, "from_pretrained", classmethod(_transformer_from_pretrained)),
        (vae, "from_pretrained", classmethod(_vae_from_pretrained)),
        (scheduler, "from_pretrained", staticmethod(load_scheduler)),
    ]


def install() -> None:
    """Make the installed LTX-Video load through ckptkit, its own code unchanged.

    Patches ``ltx_video.inference``'s ``hf_hub_download`` (the checkpoint and upscaler downloads),
    ``create_transformer``, ``create_ltx_video_pipeline`` and ``create_latent_upsampler``, and the
    ``from_pretrained`` of ``Transformer3DModel``, ``CausalVideoAutoencoder``,
    ``RectifiedFlowScheduler`` and ``LatentUpsampler``; ``inference.py``'s ``infer()`` then runs on
    ckptkit. Installing twice
    is a no-op; :func:`uninstall` restores the originals.

    Raises:
        ImportError: LTX-Video is not installed.
    """
    _PATCHES.install(_targets)


def uninstall() -> None:
    """Put LTX-Video's own loaders back (a no-op when :func:`install` was not called)."""
    _PATCHES.uninstall()


@contextmanager
def installed() -> Iterator[None]:
    """:func:`install` for the ``with`` block, :func:`uninstall` after it (even on error)."""
    was = _PATCHES.installed
    install()
    try:
        yield
    finally:
        if not was:
            uninstall()
