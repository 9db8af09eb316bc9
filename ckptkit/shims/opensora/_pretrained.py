"""Open-Sora's hub-id builders on ckptkit: ``STDiT3`` / ``VideoAutoencoderPipeline.from_pretrained``
(1.2 / 1.3) and 2.0's ``HFEmbedder`` (the T5 and CLIP text encoders)."""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from ckptkit.adapters._build import PLACEMENT_KWARGS, choose_dtype, config_kwargs, load_weights, user_dtype
from ckptkit.adapters._options import pop_loading_options
from ckptkit.adapters.t5 import _config_dtype, _is_v5, _stored_dtype, load_t5
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = ["HFEmbedder", "from_pretrained"]


def from_pretrained(
    model_class: type,
    pretrained_model_name_or_path: str | os.PathLike[str] | CheckpointDir,
    *model_args: Any,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    torch_dtype: torch.dtype | str | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: Any = None,
    **kwargs: Any,
) -> Any:
    """``model_class.from_pretrained(...)`` for a transformers ``PreTrainedModel``, through ckptkit.

    What Open-Sora's builders call with a hub id: ``STDiT3.from_pretrained("hpcai-tech/OpenSora-STDiT-v3",
    **kwargs)``, ``VideoAutoencoderPipeline.from_pretrained("hpcai-tech/OpenSora-VAE-v1.2", **kwargs)``;
    and 2.0's ``CLIPTextModel.from_pretrained``. As transformers does: the config is
    ``model_class.config_class`` read from ``config.json`` with the kwargs that are config attributes
    applied, the others go to the class (so an unknown one raises its ``TypeError``); the dtype is
    transformers' default (float32 under transformers 4, the config's or stored one under 5) unless
    ``torch_dtype``/``dtype`` is given; the model is returned in eval mode. Unlike it, the files are
    looked for in the hub caches first, only ``config.json`` and the weights are fetched, headers are
    validated, and the weights are read into a model built on the meta device (a missing weight raises).

    Raises:
        TypeError: an option ckptkit cannot honour, or a kwarg the class does not take.
        CheckpointNotFoundError: no such repo or directory, or no weights in it.
        IncompleteCheckpointError, CorruptCheckpointError: missing shards, bad headers, or weights
            that do not fit the config.
    """
    import transformers
    from accelerate import init_empty_weights

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4
        from transformers.modeling_utils import no_init_weights  # type: ignore[attr-defined,no-redef]

    options = pop_loading_options(kwargs, caller=f"{model_class.__name__}.from_pretrained")
    ckpt = resolve_ckpt_dir(
        pretrained_model_name_or_path,
        cache_dir=cache_dir,
        revision=revision,
        local_files_only=local_files_only,
        token=token,
    )
    options.check_format(ckpt)
    overrides, loader = config_kwargs(kwargs)
    loader |= {k: overrides.pop(k) for k in PLACEMENT_KWARGS if k in overrides}
    config_class: Any = getattr(model_class, "config_class", None)
    if config_class is None:
        raise TypeError(
            f"{model_class.__name__} has no config_class: it is not a transformers PreTrainedModel"
        )
    config, model_kwargs = config_class.from_pretrained(ckpt.path, return_unused_kwargs=True, **overrides)
    requested = user_dtype(torch_dtype, dtype)
    auto = _config_dtype(config) or _stored_dtype(ckpt)
    default = auto if requested == "auto" or _is_v5(transformers) else torch.get_default_dtype()
    load_dtype = choose_dtype(ckpt, requested, default)
    # built under the load dtype as transformers does: buffers the constructor makes are in it too
    previous = torch.get_default_dtype()
    if load_dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        torch.set_default_dtype(load_dtype)
    try:
        with init_empty_weights(), no_init_weights():
            model = model_class(config, *model_args, **model_kwargs)
    finally:
        torch.set_default_dtype(previous)
    keep = set()
    if load_dtype == torch.float16:
        keep |= set(getattr(model, "_keep_in_fp32_modules", None) or ())
    tied = getattr(model, "_tied_weights_keys", None)
    load_weights(
        model,
        ckpt,
        dtype=load_dtype,
        keep_fp32_modules=keep,
        device_map=device_map,
        loader=loader,
        tied=tied if isinstance(tied, dict) else None,
    )
    model.eval()
    model.config.name_or_path = os.fspath(
        pretrained_model_name_or_path.path
        if isinstance(pretrained_model_name_or_path, CheckpointDir)
        else pretrained_model_name_or_path
    )
    return options.result(model, ckpt, as_sets=_is_v5(transformers))


#: :func:`from_pretrained` under a name ``HFEmbedder``'s ``from_pretrained`` argument does not hide.
_load_pretrained = from_pretrained


class HFEmbedder(nn.Module):
    """Open-Sora 2.0's ``HFEmbedder`` (registry type ``"text_embedder"``): T5 or CLIP, through ckptkit.

    The same arguments, attributes (``tokenizer``, ``hf_module``, ``is_clip``, ``max_length``,
    ``output_key``) and forward as Open-Sora's: a path or repo id with ``"openai"`` in it is a CLIP
    text model (``pooler_output``), anything else a T5 encoder (``last_hidden_state``); the module is
    put in eval mode without gradients. ``hf_kwargs`` are the model's ``from_pretrained`` options
    (Open-Sora passes ``device_map`` and ``torch_dtype``). The weights are resolved, fetched
    (config, weights and tokenizer files only) and validated by ckptkit; the tokenizers are
    Open-Sora's classes (``T5Tokenizer`` with ``legacy=True``, ``CLIPTokenizer``), read from the
    resolved folder.

    Raises:
        ValueError: ``shardformer=True`` with CLIP (Open-Sora asserts the same).
    """

    def __init__(
        self, from_pretrained: str, max_length: int, shardformer: bool = False, **hf_kwargs: Any
    ) -> None:
        from transformers import CLIPTextModel, CLIPTokenizer, T5Tokenizer

        super().__init__()
        self.is_clip = "openai" in os.fspath(from_pretrained)
        self.max_length = max_length
        self.output_key = "pooler_output" if self.is_clip else "last_hidden_state"
        hub = {
            k: hf_kwargs.pop(k)
            for k in ("cache_dir", "revision", "local_files_only", "token")
            if k in hf_kwargs
        }
        ckpt = resolve_ckpt_dir(from_pretrained, **{k: v for k, v in hub.items() if v is not None})
        self.hf_module: Any
        if self.is_clip:
            if shardformer:
                raise ValueError("Shardformer is not supported for CLIP")
            self.tokenizer = CLIPTokenizer.from_pretrained(ckpt.path, max_length=max_length)
            self.hf_module = _load_pretrained(CLIPTextModel, ckpt, **hf_kwargs)
        else:
            self.tokenizer = T5Tokenizer.from_pretrained(ckpt.path, max_length=max_length, legacy=True)
            self.hf_module = load_t5(ckpt, **hf_kwargs)
            if shardformer:
                self.hf_module = shardformer_t5(self.hf_module)
        self.hf_module = self.hf_module.eval().requires_grad_(False)

    def forward(self, text: list[str], added_tokens: int = 0, seq_align: int = 1) -> torch.Tensor:
        """Captions -> ``last_hidden_state`` (T5) or ``pooler_output`` (CLIP), padded to ``max_length``
        (and to a multiple of ``seq_align`` counting ``added_tokens``), as Open-Sora 2.0 does."""
        batch = self.tokenizer(
            text,
            truncation=True,
            max_length=self.max_length,
            return_length=False,
            return_overflowing_tokens=False,
            padding="max_length",
            return_tensors="pt",
        )
        length = batch["input_ids"].shape[1]
        if (added_tokens + length) % seq_align != 0:
            pad = seq_align - (added_tokens + length) % seq_align
            batch["input_ids"] = nn.functional.pad(
                batch["input_ids"], (0, pad), value=self.tokenizer.pad_token_id
            )
        outputs = self.hf_module(
            input_ids=batch["input_ids"].to(self.hf_module.device),
            attention_mask=None,
            output_hidden_states=False,
        )
        return outputs[self.output_key]


def shardformer_t5(t5: Any) -> Any:
    """Open-Sora 2.0's ``shardformer_t5``: ColossalAI's ShardFormer with Open-Sora's T5 policy."""
    from colossalai.shardformer import ShardConfig, ShardFormer
    from opensora.acceleration.shardformer.policy.t5_encoder import T5EncoderPolicy

    dtype = t5.shared.weight.dtype
    shard_former = ShardFormer(
        shard_config=ShardConfig(enable_tensor_parallelism=False, enable_jit_fused=True)
    )
    optimized, _ = shard_former.optimize(t5, policy=T5EncoderPolicy())
    return optimized.to(dtype).eval().requires_grad_(False)
