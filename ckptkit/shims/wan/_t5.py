"""Wan's UMT5 text encoder (``T5EncoderModel``), built on meta and filled from its ``.pth``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import torch

from ckptkit.shims.wan._checkpoint import _assign, _read_pth, _wan

__all__ = ["T5EncoderModel"]


def _cast(state: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}


def _t5_init(
    self: Any,
    text_len: int,
    dtype: torch.dtype = torch.bfloat16,
    device: Any = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    tokenizer_path: str | None = None,
    shard_fn: Callable[..., Any] | None = None,
) -> None:
    """Wan's ``T5EncoderModel.__init__``: the UMT5 encoder built on meta and filled from the ``.pth``."""
    # the module of the class being built: Wan's, or a vendored copy patched by install(package=)
    t5 = sys.modules.get(type(self).__module__) or _wan("wan.modules.t5")
    if device is None:  # Wan's default: the current CUDA device
        device = torch.cuda.current_device() if torch.cuda.is_available() else "cpu"
    self.text_len = text_len
    self.dtype = dtype
    self.device = device
    self.checkpoint_path = checkpoint_path
    self.tokenizer_path = tokenizer_path
    model = t5.umt5_xxl(encoder_only=True, return_tokenizer=False, dtype=dtype, device="meta")
    model = model.eval().requires_grad_(False)
    # Wan builds at ``dtype`` and copies the file in: the stored tensors end at ``dtype``
    _assign(model, _cast(_read_pth(checkpoint_path, "T5EncoderModel"), dtype), checkpoint_path)
    self.model = model
    if shard_fn is not None:
        self.model = shard_fn(self.model, sync_module_states=False)
    else:
        self.model.to(self.device)
    self.tokenizer = t5.HuggingfaceTokenizer(name=tokenizer_path, seq_len=text_len, clean="whitespace")


def T5EncoderModel(
    text_len: int,
    dtype: torch.dtype = torch.bfloat16,
    device: Any = None,
    checkpoint_path: str | os.PathLike[str] | None = None,
    tokenizer_path: str | None = None,
    shard_fn: Callable[..., Any] | None = None,
) -> Any:
    """Wan's ``T5EncoderModel(text_len, dtype, device, checkpoint_path, tokenizer_path, shard_fn)``.

    Returns an instance of Wan's own class (its ``__call__`` encodes), whose UMT5 encoder was built on
    the meta device and filled from ``checkpoint_path`` (``weights_only``) at ``dtype`` — Wan builds
    the 5.7B-parameter encoder with random weights first, then copies the file in.
    """
    cls = _wan("wan.modules.t5").T5EncoderModel
    obj = cls.__new__(cls)
    _t5_init(obj, text_len, dtype, device, checkpoint_path, tokenizer_path, shard_fn)
    return obj
