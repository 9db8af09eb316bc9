"""A Wan ``ckpt_dir``: where its parts are, and reading them (``weights_only``) into Wan's modules."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ckptkit.adapters._build import read_weights
from ckptkit.errors import CheckpointNotFoundError, ModelMismatchError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.io.torch_files import load_torch_file, unwrap_state_dict
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = [
    "DIT_SUBFOLDERS",
    "T5_CHECKPOINT",
    "T5_TOKENIZER",
    "VAE_CHECKPOINTS",
    "WanCheckpoint",
    "wan_checkpoint",
]

T5_CHECKPOINT = "models_t5_umt5-xxl-enc-bf16.pth"
T5_TOKENIZER = "google/umt5-xxl"
VAE_CHECKPOINTS = ("Wan2.1_VAE.pth", "Wan2.2_VAE.pth")
#: Wan2.2 A14B's two experts (``config.low_noise_checkpoint`` / ``config.high_noise_checkpoint``).
DIT_SUBFOLDERS = ("low_noise_model", "high_noise_model")


@dataclass
class WanCheckpoint:
    """The parts of a Wan ``ckpt_dir``.

    Attributes:
        checkpoint_dir: the directory.
        t5_checkpoint: the UMT5 encoder ``.pth`` (``None`` when absent).
        t5_tokenizer: the tokenizer directory (``None`` when absent).
        vae_checkpoint: the VAE ``.pth`` (``None`` when absent).
        dit: ``""`` (root) or ``"low_noise_model"``/``"high_noise_model"`` -> the resolved DiT weights.
    """

    checkpoint_dir: Path
    t5_checkpoint: Path | None = None
    t5_tokenizer: Path | None = None
    vae_checkpoint: Path | None = None
    dit: dict[str, CheckpointDir] = field(default_factory=dict)

    def _need(self, value: Path | None, what: str, names: str) -> Path:
        if value is None:
            raise CheckpointNotFoundError(
                f"no {what} ({names}) in this Wan checkpoint directory",
                path=self.checkpoint_dir,
                fix=f"download {names} into it (e.g. `huggingface-cli download <repo> --local-dir <dir>`)",
            )
        return value

    def t5_state_dict(self) -> dict[str, torch.Tensor]:
        """The UMT5 encoder's tensors, as Wan's ``T5EncoderModel`` loads them (``weights_only``)."""
        path = self._need(self.t5_checkpoint, "T5 encoder", T5_CHECKPOINT)
        return unwrap_state_dict(load_torch_file(path), None, path)

    def vae_state_dict(self) -> dict[str, torch.Tensor]:
        """The VAE's tensors, as Wan's ``_video_vae`` loads them (``weights_only``)."""
        path = self._need(self.vae_checkpoint, "VAE", " or ".join(VAE_CHECKPOINTS))
        return unwrap_state_dict(load_torch_file(path), None, path)

    def dit_checkpoint(self, subfolder: str | None = None) -> CheckpointDir:
        """The DiT weights in the root (``subfolder=None``) or in ``low_noise_model``/``high_noise_model``."""
        key = subfolder or ""
        if key not in self.dit:
            have = ", ".join(repr(k or "(root)") for k in self.dit) or "none"
            raise CheckpointNotFoundError(
                f"no DiT weights in {key or 'the root'!r} (DiT weights found in: {have})",
                path=self.checkpoint_dir / key,
                fix="pass subfolder= one of " + ", ".join(repr(k) for k in self.dit if k)
                if any(self.dit)
                else "download the diffusion_pytorch_model*.safetensors files and config.json",
            )
        return self.dit[key]

    def dit_state_dict(
        self, subfolder: str | None = None, *, dtype: torch.dtype | str | None = None
    ) -> dict[str, torch.Tensor]:
        """The DiT's tensors, floating ones cast to ``dtype`` as they are read (never a float32 copy first)."""
        target = to_torch_dtype(dtype) if dtype is not None else None
        return read_weights(self.dit_checkpoint(subfolder), dtype=target)


def wan_checkpoint(checkpoint_dir: str | os.PathLike[str]) -> WanCheckpoint:
    """Find the parts of a Wan ``ckpt_dir`` (a local directory, a hub snapshot or ``--local-dir`` copy).

    Nothing is read but file names and the DiT indexes' headers.

    Raises:
        CheckpointNotFoundError: the directory does not exist or holds none of the parts.

    Example:
        >>> parts = wan_checkpoint("./Wan2.2-T2V-A14B")  # doctest: +SKIP
        >>> parts.t5_checkpoint.name, sorted(parts.dit)  # doctest: +SKIP
        ('models_t5_umt5-xxl-enc-bf16.pth', ['high_noise_model', 'low_noise_model'])
    """
    root = Path(os.path.expanduser(os.fspath(checkpoint_dir)))
    if not root.is_dir():
        raise CheckpointNotFoundError(
            "is not a directory", path=root, fix="pass the Wan checkpoint directory (--ckpt_dir)"
        )
    parts = WanCheckpoint(root)
    if (root / T5_CHECKPOINT).is_file():
        parts.t5_checkpoint = root / T5_CHECKPOINT
    if (root / T5_TOKENIZER).is_dir():
        parts.t5_tokenizer = root / T5_TOKENIZER
    parts.vae_checkpoint = next((root / n for n in VAE_CHECKPOINTS if (root / n).is_file()), None)
    for subfolder in ("", *DIT_SUBFOLDERS):
        folder = root / subfolder
        if (folder / "config.json").is_file():
            parts.dit[subfolder] = resolve_ckpt_dir(folder, weights_name="diffusion_pytorch_model")
    if not (parts.t5_checkpoint or parts.vae_checkpoint or parts.dit):
        raise CheckpointNotFoundError(
            f"holds none of {T5_CHECKPOINT}, {' / '.join(VAE_CHECKPOINTS)}, or a DiT config.json + weights "
            f"(in the root or {' / '.join(DIT_SUBFOLDERS)})",
            path=root,
            fix="pass the directory Wan's weights were downloaded into",
        )
    return parts


def _wan(module_name: str) -> Any:
    """A module of the installed Wan package (its model classes)."""
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"{module_name} comes from Wan ({exc}); install Wan2.1/Wan2.2 (`pip install wan22`) or pass model_class="
        ) from None


def _read_pth(path: str | os.PathLike[str] | None, what: str) -> dict[str, torch.Tensor]:
    if path is None:
        raise TypeError(f"{what}: checkpoint path is None; pass the .pth file")
    return unwrap_state_dict(load_torch_file(path), None, Path(path))


def _assign(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Any) -> None:
    """Fill a meta-built ``model`` with ``state`` (strict: every key, nothing extra), as ``load_state_dict(assign=True)``."""
    try:
        model.load_state_dict(state, assign=True, strict=True)
    except RuntimeError as exc:
        raise ModelMismatchError(
            f"does not fit {type(model).__name__}: {str(exc)[:600]}",
            path=path,
            fix="check that the file is this model's checkpoint (Wan's native key names)",
        ) from None
