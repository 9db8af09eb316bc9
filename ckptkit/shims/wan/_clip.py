"""Wan's CLIP image encoder (``CLIPModel``, i2v / flf2v in Wan2.1, animate in Wan2.2), filled from its ``.pth``."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import torch

from ckptkit.shims.wan._checkpoint import _assign, _read_pth, _wan

__all__ = ["CLIPModel", "clip_module"]


def clip_module(package: str = "wan") -> Any:
    """Where ``CLIPModel`` lives: ``<package>.modules.clip`` (Wan2.1) or ``.modules.animate.clip`` (Wan2.2)."""
    try:
        return importlib.import_module(f"{package}.modules.clip")
    except ImportError:
        return _wan(f"{package}.modules.animate.clip")


def _clip_init(
    self: Any,
    dtype: torch.dtype,
    device: Any,
    checkpoint_path: str | os.PathLike[str] | None,
    tokenizer_path: str | None,
) -> None:
    """Wan's ``CLIPModel.__init__``: the XLM-RoBERTa CLIP built on meta and filled from the ``.pth``."""
    # the module of the class being built: Wan's, or a vendored copy patched by install(package=)
    clip = sys.modules.get(type(self).__module__) or clip_module()
    self.dtype = dtype
    self.device = device
    self.checkpoint_path = checkpoint_path
    self.tokenizer_path = tokenizer_path
    # Wan's own builder, on meta: the same architecture and the same image transforms
    model, self.transforms = clip.clip_xlm_roberta_vit_h_14(
        pretrained=False, return_transforms=True, return_tokenizer=False, dtype=dtype, device="meta"
    )
    model = model.eval().requires_grad_(False)
    # Wan builds at ``dtype`` on ``device`` and copies the file in: the tensors end there, at ``dtype``
    state = {
        k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
        for k, v in _read_pth(checkpoint_path, "CLIPModel").items()
    }
    _assign(model, state, checkpoint_path)
    self.model = model
    self.tokenizer = clip.HuggingfaceTokenizer(
        name=tokenizer_path, seq_len=self.model.max_text_len - 2, clean="whitespace"
    )


def CLIPModel(
    dtype: torch.dtype,
    device: Any,
    checkpoint_path: str | os.PathLike[str] | None,
    tokenizer_path: str | None,
) -> Any:
    """Wan's ``CLIPModel(dtype, device, checkpoint_path, tokenizer_path)``.

    Returns an instance of Wan's own class (its ``visual`` encodes frames), whose model was built on
    the meta device by Wan's ``clip_xlm_roberta_vit_h_14`` and filled from ``checkpoint_path``
    (``models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth``, ``weights_only``) at ``dtype`` on
    ``device`` — Wan builds the 1.1B-parameter model with random weights first, then copies the file in.
    """
    cls = clip_module().CLIPModel
    obj = cls.__new__(cls)
    _clip_init(obj, dtype, device, checkpoint_path, tokenizer_path)
    return obj
