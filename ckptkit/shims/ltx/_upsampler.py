"""LTX-Video's latent upsampler (the multi-scale pipeline's spatial upscaler) and its hub downloads."""

from __future__ import annotations

import os
from typing import Any

import torch

from ckptkit.adapters._build import read_weights
from ckptkit.errors import CorruptCheckpointError
from ckptkit.resolve.resolve import resolve_ckpt_dir
from ckptkit.shims.ltx._models import _load_strict
from ckptkit.shims.ltx._package import ltx
from ckptkit.shims.ltx._single_file import LTXSingleFile, read_single_file

__all__ = ["create_latent_upsampler", "hf_hub_download", "load_latent_upsampler"]


def load_latent_upsampler(
    pretrained_model_path: str | os.PathLike[str] | LTXSingleFile,
    *,
    model_class: type | None = None,
    **resolve_kwargs: Any,
) -> torch.nn.Module:
    """LTX-Video's ``LatentUpsampler.from_pretrained(<.safetensors>)``.

    The upscaler ships as one ``.safetensors`` file whose metadata ``config`` is the model's config
    (``in_channels``, ``mid_channels``, ``num_blocks_per_stage``, ``dims``, ``spatial_upsample``,
    ``temporal_upsample``). As LTX-Video does, the model is built on the meta device and filled with
    ``assign=True`` (the stored dtype is kept), strictly, and returned in training mode.

    Args:
        pretrained_model_path: a local file, ``"org/repo/file.safetensors"``, or a bare file name
            (looked up in ``Lightricks/LTX-Video``, as ``inference.py`` does).
        model_class: the class (default: LTX-Video's ``LatentUpsampler``).
        resolve_kwargs: ``cache_dir``, ``revision``, ``local_files_only``, ``token``.

    Raises:
        CheckpointNotFoundError: no such file (LTX-Video fails with ``UnboundLocalError``).
        CorruptCheckpointError: not one safetensors file with a ``config`` in its metadata.
        ModelMismatchError: the weights do not fit the config.

    Example:
        >>> upsampler = load_latent_upsampler("ltxv-spatial-upscaler-0.9.7.safetensors")  # doctest: +SKIP
    """
    single = (
        pretrained_model_path
        if isinstance(pretrained_model_path, LTXSingleFile)
        else read_single_file(pretrained_model_path, **resolve_kwargs)
    )
    if model_class is None:
        model_class = ltx("ltx_video.models.autoencoders.latent_upsampler.LatentUpsampler")
    state = read_weights(single.ckpt)
    if not state:
        raise CorruptCheckpointError(
            "holds no tensors", path=single.path, fix="pass the upscaler's .safetensors"
        )
    with torch.device("meta"):
        model = model_class.from_config(single.config)  # type: ignore[attr-defined,union-attr]
    _load_strict(model, state, single.path, assign=True)
    return model


def create_latent_upsampler(
    latent_upsampler_model_path: str | os.PathLike[str], device: Any
) -> torch.nn.Module:
    """LTX-Video's ``create_latent_upsampler(latent_upsampler_model_path, device)``.

    :func:`load_latent_upsampler`, moved to ``device`` and put in eval mode, as LTX-Video returns it.
    """
    upsampler = load_latent_upsampler(latent_upsampler_model_path)
    upsampler.to(device)
    upsampler.eval()
    return upsampler


def hf_hub_download(repo_id: str, filename: str, *, repo_type: str | None = None, **kwargs: Any) -> str:
    """The ``hf_hub_download`` LTX-Video's ``infer()`` fetches its checkpoints with, through ckptkit.

    The file is taken from any hub cache if it is there, else downloaded alone, and its safetensors
    header is checked before the path is returned. ``revision``, ``cache_dir``, ``token`` and
    ``local_files_only`` are honoured; any other option raises.

    Raises:
        TypeError: an option other than those above, or a ``repo_type`` other than ``"model"``.
        CheckpointNotFoundError: no such file in the repo (or offline and not cached).
        CorruptCheckpointError: the file is not a complete safetensors file.
    """
    supported = {"revision", "cache_dir", "token", "local_files_only"}
    unsupported = sorted(set(kwargs) - supported)
    if unsupported or repo_type not in (None, "model"):
        raise TypeError(
            f"hf_hub_download (ckptkit.shims.ltx) got unsupported arguments: "
            f"{unsupported or [f'repo_type={repo_type!r}']}"
        )
    ckpt = resolve_ckpt_dir(f"{repo_id}/{filename}", **{k: v for k, v in kwargs.items() if v is not None})
    return os.fspath(ckpt.weight_files[0])
