"""LTX-Video's model loaders on ckptkit: transformer, VAE, scheduler and text encoder."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ckptkit.adapters._build import fill_model, read_weights
from ckptkit.adapters.t5 import load_t5
from ckptkit.errors import ModelMismatchError
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.resolve.resolve import resolve_ckpt_dir
from ckptkit.shims.ltx._directories import (
    diffusers_config,
    rename_keys,
    scheduler_directory_config,
    vae_directory_state,
)
from ckptkit.shims.ltx._package import ltx as _ltx
from ckptkit.shims.ltx._single_file import COMPONENT_PREFIXES, LTXSingleFile, read_single_file

__all__ = [
    "DEFAULT_TEXT_ENCODER",
    "create_transformer",
    "load_component",
    "load_scheduler",
    "load_text_encoder",
    "load_vae",
]

#: The text encoder LTX-Video's scripts use.
DEFAULT_TEXT_ENCODER = "PixArt-alpha/PixArt-XL-2-1024-MS"


def load_component(
    ckpt_path: str | os.PathLike[str] | LTXSingleFile,
    component: str,
    model_class: type,
    *,
    device: str | torch.device = "cpu",
    **resolve_kwargs: Any,
) -> torch.nn.Module:
    """Build ``model_class`` from the file's ``component`` config on the meta device and fill it.

    The weights keep the dtype they are stored in (``load_state_dict(assign=True)``, as LTX-Video
    does), so an fp8 or bf16 file is never widened in memory.

    Args:
        ckpt_path: the single file (see :func:`read_single_file`) or what it returned.
        component: ``"transformer"`` or ``"vae"``.
        model_class: a diffusers ``ConfigMixin`` model class (LTX-Video's ``Transformer3DModel``,
            diffusers' ``LTXVideoTransformer3DModel``, ...).
        device: where the weights are read to.

    Raises:
        CorruptCheckpointError: the config or weights are missing or do not fit ``model_class``.
    """
    from accelerate import init_empty_weights

    single = (
        ckpt_path if isinstance(ckpt_path, LTXSingleFile) else read_single_file(ckpt_path, **resolve_kwargs)
    )
    config = single._part(component)
    prefix = COMPONENT_PREFIXES.get(component)
    if prefix is None:
        raise ValueError(f"component must be one of {sorted(COMPONENT_PREFIXES)}, not {component!r}")
    with init_empty_weights():
        model = model_class.from_config(config)  # type: ignore[attr-defined,union-attr]
    fill_model(
        model,
        single.ckpt,
        dtype=None,
        keep_fp32_modules=(),
        device=torch.device(device),
        prefix=prefix,
    )
    return model.eval()


def _local_directory(path: str | os.PathLike[str]) -> Path | None:
    candidate = Path(os.path.expanduser(os.fspath(path)))
    return candidate if candidate.is_dir() else None


def _diffusers_transformer(directory: Path, model_class: type) -> torch.nn.Module:
    """``Transformer3DModel.from_pretrained(<diffusers-format directory>)``, as LTX-Video does it.

    The diffusers config is mapped to LTX-Video's (only the configs of ``Lightricks/LTX-Video`` are
    known to it), the keys renamed with its ``TRANSFORMER_KEYS_RENAME_DICT`` and the model built on
    meta and filled with ``assign=True`` (the stored dtype is kept), strictly.
    """
    config = diffusers_config(directory / "transformer" / "config.json", "transformer")
    renames = _ltx("ltx_video.utils.diffusers_config_mapping.TRANSFORMER_KEYS_RENAME_DICT")
    ckpt = resolve_ckpt_dir(directory / "transformer", weights_name="diffusion_pytorch_model")
    state = rename_keys(read_weights(ckpt), renames)
    with torch.device("meta"):
        model = model_class.from_config(config)  # type: ignore[attr-defined,union-attr]
    _load_strict(model, state, ckpt.path, assign=True)
    return model


def _load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Any, **kwargs: Any) -> None:
    """``model.load_state_dict(state, **kwargs)`` (the class's own, with its renames) with ckptkit's errors."""
    try:
        model.load_state_dict(state, **kwargs)
    except RuntimeError as exc:
        raise ModelMismatchError(
            f"does not fit {type(model).__name__}: {str(exc)[:600]}",
            path=path,
            fix="check that the config and the weights are from the same release",
        ) from None


def create_transformer(
    ckpt_path: str | os.PathLike[str],
    precision: str,
    *,
    model_class: type | None = None,
    device: str | torch.device = "cpu",
    **resolve_kwargs: Any,
) -> torch.nn.Module:
    """LTX-Video's ``create_transformer(ckpt_path, precision)``.

    Args:
        ckpt_path: the single file (local, ``org/repo/file``, or a file name in ``Lightricks/LTX-Video``),
            or a local diffusers-format LTX-Video directory (``transformer/config.json`` + weights).
        precision: ``"bfloat16"`` casts to bf16; ``"float8_e4m3fn"`` keeps the fp8 weights and patches
            the model with Q8-Kernels (as LTX-Video does); anything else keeps the stored dtype.
        model_class: the transformer class (default: LTX-Video's ``Transformer3DModel``).
        device: where the weights are read to.
        resolve_kwargs: ``cache_dir``, ``revision``, ``local_files_only``, ``token``.

    The model is left in the mode LTX-Video leaves it in (``from_config`` builds in training mode).

    Raises:
        ValueError: ``precision="float8_e4m3fn"`` without Q8-Kernels (LTX-Video's own error).
        ImportError: no ``model_class`` given and LTX-Video is not installed.

    Example:
        >>> transformer = create_transformer("ltxv-2b-0.9.8-distilled.safetensors", "bfloat16")  # doctest: +SKIP
    """
    patch: Any = None
    if precision == "float8_e4m3fn":
        try:
            from q8_kernels.integration.patch_transformer import patch_diffusers_transformer

            patch = patch_diffusers_transformer
        except ImportError:
            raise ValueError(
                "Q8-Kernels not found. To use FP8 checkpoint, please install Q8 kernels from "
                "https://github.com/Lightricks/LTXVideo-Q8-Kernels"
            ) from None
    if model_class is None:
        model_class = _ltx("ltx_video.models.transformers.transformer3d.Transformer3DModel")
    directory = _local_directory(ckpt_path)
    if directory is not None:
        if resolve_kwargs:
            raise TypeError(
                f"create_transformer() got hub options for a local directory: {sorted(resolve_kwargs)}"
            )
        model = _diffusers_transformer(directory, model_class).to(device)
    else:
        model = load_component(ckpt_path, "transformer", model_class, device=device, **resolve_kwargs)
        model.train()  # as LTX-Video returns it (built by from_config, never put in eval mode)
    if precision == "bfloat16":
        model = model.to(torch.bfloat16)
    if patch is not None:
        patch(model)
    return model


def load_vae(
    pretrained_model_name_or_path: str | os.PathLike[str] | LTXSingleFile,
    *,
    torch_dtype: torch.dtype | str | None = None,
    model_class: type | None = None,
    **resolve_kwargs: Any,
) -> torch.nn.Module:
    """LTX-Video's ``CausalVideoAutoencoder.from_pretrained``: a single file or a local directory.

    As LTX-Video does: the VAE is built from the config (the single file's embedded ``vae`` part,
    the ``config.json`` next to an ``autoencoder.pth``, or LTX-Video's own config for a
    Lightricks diffusers ``vae/config.json``), cast to ``torch_dtype`` when given (else float32,
    whatever the file stores), and filled by the class's own ``load_state_dict``, which renames the
    legacy keys and registers the latent statistics (``std_of_means``, ``mean_of_means`` from
    ``per_channel_statistics.*``, or from ``per_channel_statistics.json`` next to the ``.pth``) that
    ``normalize_latents`` needs. A ``.pth`` is read with ``weights_only``.

    Raises:
        CorruptCheckpointError: no config or VAE weights in the file.
        CheckpointNotFoundError: a directory in neither layout.
        UnsafeCheckpointError: an ``autoencoder.pth`` that needs more than tensors to unpickle.
        ModelMismatchError: the weights do not fit the config.
    """
    if model_class is None:
        model_class = _ltx("ltx_video.models.autoencoders.causal_video_autoencoder.CausalVideoAutoencoder")
    directory = (
        None
        if isinstance(pretrained_model_name_or_path, LTXSingleFile)
        else _local_directory(pretrained_model_name_or_path)
    )
    if directory is not None:
        if resolve_kwargs:
            raise TypeError(f"load_vae() got hub options for a local directory: {sorted(resolve_kwargs)}")
        config, state, path = vae_directory_state(directory, model_class)
    else:
        single = (
            pretrained_model_name_or_path
            if isinstance(pretrained_model_name_or_path, LTXSingleFile)
            else read_single_file(pretrained_model_name_or_path, **resolve_kwargs)
        )
        config, state, path = dict(single.vae_config), single.vae_state_dict(), single.path
    model = model_class.from_config(config)  # type: ignore[attr-defined,union-attr]
    if torch_dtype is not None:
        model.to(to_torch_dtype(torch_dtype))
    _load_strict(model, state, path)
    return model


def load_scheduler(ckpt_path: str | os.PathLike[str] | LTXSingleFile, **resolve_kwargs: Any) -> Any:
    """LTX-Video's ``RectifiedFlowScheduler.from_pretrained``: from a single file's embedded config,
    or from a diffusers directory's ``scheduler/scheduler_config.json`` (Lightricks' config, mapped
    to LTX-Video's own as it does).

    Only the file's header is read (LTX-Video reads every tensor to get at the metadata).

    Raises:
        CorruptCheckpointError: no scheduler config, or a diffusers one LTX-Video does not know
            (where LTX-Video fails with ``UnboundLocalError``).
    """
    scheduler_class = _ltx("ltx_video.schedulers.rf.RectifiedFlowScheduler")
    directory = None if isinstance(ckpt_path, LTXSingleFile) else _local_directory(ckpt_path)
    if directory is not None:
        if resolve_kwargs:
            raise TypeError(
                f"load_scheduler() got hub options for a local directory: {sorted(resolve_kwargs)}"
            )
        return scheduler_class.from_config(scheduler_directory_config(directory))
    single = (
        ckpt_path if isinstance(ckpt_path, LTXSingleFile) else read_single_file(ckpt_path, **resolve_kwargs)
    )
    return scheduler_class.from_config(single.scheduler_config)


def load_text_encoder(
    text_encoder_model_name_or_path: str | os.PathLike[str] = DEFAULT_TEXT_ENCODER,
    *,
    subfolder: str = "text_encoder",
    tokenizer_subfolder: str = "tokenizer",
    dtype: torch.dtype | str | None = None,
    device_map: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    with_tokenizer: bool = True,
) -> tuple[torch.nn.Module, Any]:
    """LTX-Video's text encoder and tokenizer: ``T5EncoderModel`` from ``subfolder="text_encoder"``.

    Only the text encoder's weights (and the tokenizer) are read or fetched, never the rest of
    the PixArt repo.

    Returns:
        ``(T5EncoderModel, tokenizer)`` (``(T5EncoderModel, None)`` with ``with_tokenizer=False``).

    Example:
        >>> text_encoder, tokenizer = load_text_encoder(dtype="bf16")  # doctest: +SKIP
    """
    # load_t5 refuses tokenizer options without with_tokenizer=True: pass them only then.
    tokenizer_options: dict[str, Any] = (
        {"with_tokenizer": True, "tokenizer_subfolder": tokenizer_subfolder} if with_tokenizer else {}
    )
    loaded = load_t5(
        text_encoder_model_name_or_path,
        subfolder=subfolder,
        dtype=dtype,
        device_map=device_map,
        cache_dir=cache_dir,
        revision=revision,
        local_files_only=local_files_only,
        token=token,
        **tokenizer_options,
    )
    return loaded if with_tokenizer else (loaded, None)
