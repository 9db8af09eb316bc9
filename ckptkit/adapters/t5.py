"""``load_t5``: a T5 / UMT5 text encoder, as ``T5EncoderModel.from_pretrained`` returns it."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ckptkit.adapters._build import PLACEMENT_KWARGS, config_kwargs, user_dtype
from ckptkit.adapters._component import ComponentRequest, read_config, resolve_component
from ckptkit.adapters._options import pop_loading_options
from ckptkit.adapters._transformers import build_and_fill, is_v5
from ckptkit.errors import CheckpointNotFoundError, CorruptCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.components import CONFIG_NAME

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["TOKENIZER_FILES", "load_t5", "load_tokenizer"]

#: model_type in config.json -> the encoder-only class.
ENCODER_CLASSES = {"t5": "T5EncoderModel", "umt5": "UMT5EncoderModel", "mt5": "MT5EncoderModel"}
#: Any of these in a directory means a tokenizer is saved there.
TOKENIZER_FILES = ("tokenizer.json", "spiece.model", "tokenizer_config.json")


def load_t5(
    pretrained_model_name_or_path: str | os.PathLike[str] | CheckpointDir,
    *model_args: Any,
    config: Any = None,  # a PretrainedConfig, or a path or repo id to read one from
    subfolder: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    variant: str | None = None,
    torch_dtype: torch.dtype | str | None = None,
    dtype: torch.dtype | str | None = None,
    local_files_only: bool | None = None,
    device_map: str | dict[str, Any] | torch.device | int | None = None,
    low_cpu_mem_usage: bool = True,
    token: str | bool | None = None,
    variant_fallback: str = "warn",
    with_tokenizer: bool = False,
    tokenizer_subfolder: str | None = None,
    **kwargs: Any,
) -> Any:
    """Load a T5 or UMT5 text encoder the way ``T5EncoderModel.from_pretrained`` does, through ckptkit.

    The class comes from ``config.json`` (``model_type`` ``t5`` -> ``T5EncoderModel``, ``umt5`` ->
    ``UMT5EncoderModel``). The weights are found offline first, chosen by ckptkit's variant rules,
    their headers checked against the index, and read into a model built on the meta device; the
    shared embedding is tied and ``_keep_in_fp32_modules`` (``wo``) stay float32 under float16.

    Args:
        pretrained_model_name_or_path: a model or pipeline directory, weights file, hub repo id or
            cache directory (anything :func:`ckptkit.resolve_ckpt_dir` accepts).
        subfolder: the component folder; for a pipeline it defaults to its text encoder.
        cache_dir: the hub cache to look in (hub forms).
        revision: branch, tag or commit (hub forms).
        local_files_only: never download.
        token: hub token (hub forms).
        variant: ``"fp16"``, ``"bf16"``, ...; see ``variant_fallback``.
        torch_dtype: the dtype to load in (the older name of ``dtype``).
        dtype: the dtype to load in (wins over ``torch_dtype``); a ``torch.dtype``, ``"bf16"``,
            ``"float16"``, or ``"auto"``/``None`` for the config's dtype (as stored if it has none).
        device_map: a device (``"cuda:0"``), ``"auto"`` or a module -> device dict (accelerate).
        low_cpu_mem_usage: accepted for compatibility; loading always goes through the meta device.
        variant_fallback: ``"warn"``, ``"allow"`` or ``"error"`` when the variant is missing.
        with_tokenizer: also load the tokenizer and return ``(model, tokenizer)``.
        tokenizer_subfolder: where the tokenizer is (default: the model folder when it holds one,
            else the pipeline's ``tokenizer`` folder).
        model_args: passed to the model class after the config, as ``from_pretrained`` does
            (``T5EncoderModel`` takes none, so any raises its ``TypeError``).
        config: a ``PretrainedConfig`` to build with instead of ``config.json``, or a directory or
            repo id to read the config from (as ``from_pretrained(config=)``).
        kwargs: config overrides (``AutoConfig.from_pretrained(..., **kwargs)``); those that are not
            config attributes go to the model class, as in ``from_pretrained`` (so an unknown one
            raises ``TypeError`` naming it). ``output_loading_info=True`` returns ``(model, info)``;
            ``use_safetensors=True`` requires safetensors weights; ``max_memory``/``offload_folder``
            go to ``device_map`` placement; download and reading options with nothing left to do
            (``resume_download``, ...) are accepted; ``disable_mmap=True`` gives private copies instead
            of copy-on-write views of the file; ones ckptkit cannot honour
            (``force_download=True``, ``proxies``, ``ignore_mismatched_sizes=True``, ...) raise
            ``TypeError`` naming them.

    Returns:
        The encoder in eval mode; ``(encoder, tokenizer)`` with ``with_tokenizer``;
        ``(encoder, info)`` with ``output_loading_info`` (``(encoder, tokenizer, info)`` with both).

    Raises:
        TypeError: an unknown keyword or positional argument, or an option ckptkit cannot honour.
        ValueError: ``quantization_config`` (not supported; use transformers for it).
        CheckpointNotFoundError: no weights or no config.json.
        VariantNotFoundError: the variant rules refuse.
        IncompleteCheckpointError, CorruptCheckpointError: missing shards, bad headers, weights that
            do not fit the config.

    Example:
        >>> encoder, tokenizer = load_t5("PixArt-alpha/PixArt-XL-2-1024-MS", dtype="bf16", with_tokenizer=True)  # doctest: +SKIP
        >>> type(encoder).__name__
        'T5EncoderModel'
    """
    import transformers

    options = pop_loading_options(kwargs, caller="load_t5")
    hub = {"cache_dir": cache_dir, "revision": revision, "local_files_only": local_files_only, "token": token}
    request = ComponentRequest(
        pretrained_model_name_or_path,
        subfolder,
        "text_encoder",
        set(ENCODER_CLASSES.values()),
        variant,
        variant_fallback,
        hub,
    )
    ckpt = resolve_component(request)
    options.check_format(ckpt)
    raw = (
        {"model_type": config.model_type}
        if isinstance(config, transformers.PretrainedConfig)
        else read_config(ckpt)
    )
    class_name = ENCODER_CLASSES.get(str(raw.get("model_type")))
    if class_name is None:
        raise CorruptCheckpointError(
            f"config.json describes a {raw.get('model_type') or raw.get('_class_name')!r} model, "
            f"not a T5 encoder (model_type one of {', '.join(ENCODER_CLASSES)})",
            path=Path(ckpt.path) / CONFIG_NAME,
            fix="point load_t5 at a T5/UMT5 text encoder (pass subfolder='text_encoder' for a pipeline)",
        )
    overrides, loader = config_kwargs(kwargs)
    loader |= {k: overrides.pop(k) for k in PLACEMENT_KWARGS if k in overrides}
    config, model_kwargs = _model_config(transformers, ckpt, config, overrides, hub)
    cls = getattr(transformers, class_name)
    model = build_and_fill(
        transformers,
        cls,
        config,
        ckpt,
        model_args=model_args,
        model_kwargs=model_kwargs,
        requested=user_dtype(torch_dtype, dtype),
        device_map=device_map,
        loader=loader,
        name_or_path=pretrained_model_name_or_path,
    )
    # output_loading_info: transformers 5 gives sets of keys, 4.x lists
    result = options.result(model, ckpt, as_sets=is_v5(transformers))
    if not with_tokenizer:
        return result
    tokenizer = load_tokenizer(ckpt, subfolder=tokenizer_subfolder, hub=hub)
    return (model, tokenizer, result[1]) if options.output_loading_info else (model, tokenizer)


def _model_config(
    transformers: Any, ckpt: CheckpointDir, config: Any, overrides: dict[str, Any], hub: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """(the config to build with, the kwargs left for the model class), as ``from_pretrained`` splits them.

    A config object is used as given (copied) and every kwarg goes to the class; otherwise the
    config is read from ``config`` (a path or repo id) or the checkpoint, taking the kwargs that
    are config attributes.
    """
    if isinstance(config, transformers.PretrainedConfig):
        return copy.deepcopy(config), overrides
    if config is None:
        return transformers.AutoConfig.from_pretrained(ckpt.path, return_unused_kwargs=True, **overrides)
    hub_kwargs = {k: v for k, v in hub.items() if v is not None}
    return transformers.AutoConfig.from_pretrained(
        config, return_unused_kwargs=True, **hub_kwargs, **overrides
    )


def load_tokenizer(
    ckpt: CheckpointDir, *, subfolder: str | None = None, hub: dict[str, Any] | None = None
) -> PreTrainedTokenizerBase:
    """The tokenizer that goes with a resolved text encoder (``AutoTokenizer.from_pretrained``).

    Looks in ``subfolder`` (relative to the pipeline root when the encoder is a pipeline component),
    else in the encoder's own folder when it holds tokenizer files, else in the pipeline's
    ``tokenizer`` folder; hub repos are asked for that folder only.

    Raises:
        CheckpointNotFoundError: no tokenizer files there.
    """
    from transformers import AutoTokenizer

    hub = {k: v for k, v in (hub or {}).items() if v is not None}
    here = Path(ckpt.path)
    base = here.parent if ckpt.subfolder else here
    if subfolder is None and any((here / name).is_file() for name in TOKENIZER_FILES):
        return AutoTokenizer.from_pretrained(here)
    folder = subfolder or "tokenizer"
    local = base / folder
    if any((local / name).is_file() for name in TOKENIZER_FILES):
        return AutoTokenizer.from_pretrained(local)
    if ckpt.repo_id is not None:
        hub.pop("revision", None)
        return AutoTokenizer.from_pretrained(
            ckpt.repo_id, subfolder=folder, revision=ckpt.revision or "main", **hub
        )
    raise CheckpointNotFoundError(
        f"no tokenizer files ({', '.join(TOKENIZER_FILES)}) in {here} or {local}",
        path=local,
        fix="pass tokenizer_subfolder= the folder that holds the tokenizer",
    )
