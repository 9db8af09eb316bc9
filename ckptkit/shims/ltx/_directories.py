"""LTX-Video's directory forms: the VAE's ``autoencoder.pth`` release and diffusers-format folders."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ckptkit.adapters._build import read_weights
from ckptkit.errors import CheckpointNotFoundError, CorruptCheckpointError
from ckptkit.io.torch_files import load_torch_file
from ckptkit.resolve.resolve import resolve_ckpt_dir
from ckptkit.shims.ltx._package import ltx as _ltx

__all__ = ["diffusers_config", "rename_keys", "scheduler_directory_config", "vae_directory_state"]

#: The latent statistics' key prefix in LTX-Video's VAE state dicts.
STATISTICS_PREFIX = "per_channel_statistics."


def _ltx_mapping() -> tuple[Any, Any]:
    # LTX-Video's own table of the Lightricks/LTX-Video diffusers configs
    return (
        _ltx("ltx_video.utils.diffusers_config_mapping.diffusers_and_ours_config_mapping"),
        _ltx("ltx_video.utils.diffusers_config_mapping.make_hashable_key"),
    )


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"has no {what}",
            path=path,
            fix="pass an LTX-Video single .safetensors file, a VAE directory with autoencoder.pth + "
            "config.json, or a diffusers-format LTX-Video directory",
        )
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptCheckpointError(f"is not JSON ({exc})", path=path) from None


def diffusers_config(path: Path, component: str) -> dict[str, Any]:
    """LTX-Video's own config for a diffusers ``<component>/config.json`` (only Lightricks' are known)."""
    mapping, hashable = _ltx_mapping()
    key = hashable(_read_json(path, f"{component} config"))
    if key not in mapping:
        raise CorruptCheckpointError(
            f"its diffusers {component} config is not one of Lightricks/LTX-Video's "
            "(LTX-Video maps only those)",
            path=path,
            fix="use a single-file release, or the diffusers classes through ckptkit.adapters",
        )
    return dict(mapping[key])


def rename_keys(state: dict[str, torch.Tensor], renames: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """LTX-Video's diffusers -> own key renaming, done as it does it (each key once, in order)."""
    for key in list(state.keys()):
        new_key = key
        for old, new in renames.items():
            new_key = new_key.replace(old, new)
        state[new_key] = state.pop(key)
    return state


def vae_directory_state(
    directory: Path, model_class: Any
) -> tuple[dict[str, Any], dict[str, torch.Tensor], Path]:
    """``CausalVideoAutoencoder.from_pretrained(<directory>)``'s config and state dict, and the weights' path.

    Two layouts, as LTX-Video accepts them: the older release (``autoencoder.pth``, ``config.json``
    and optionally ``per_channel_statistics.json``, whose ``std-of-means``/``mean-of-means``
    columns become the latent statistics) and a diffusers-format folder (``vae/config.json``, one of
    Lightricks/LTX-Video's, and ``vae/diffusion_pytorch_model.safetensors``, keys renamed with
    LTX-Video's ``VAE_KEYS_RENAME_DICT``). The ``.pth`` is read with ``weights_only``.

    Raises:
        CheckpointNotFoundError: neither layout's files are there.
        CorruptCheckpointError: a config or statistics file is unreadable, or the ``.pth`` holds
            something other than a flat state dict.
        UnsafeCheckpointError: the ``.pth`` needs more than tensors to unpickle.
    """
    pth = directory / "autoencoder.pth"
    if pth.exists():
        config_path = directory / "config.json"
        _read_json(config_path, "config.json next to autoencoder.pth")  # typed errors first
        config = model_class.load_config(config_path)
        loaded = load_torch_file(pth)
        if not isinstance(loaded, Mapping) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise CorruptCheckpointError(
                "is not a flat state dict of tensors (LTX-Video loads it as one)",
                path=pth,
                fix="pass the autoencoder.pth of an LTX-Video VAE release",
            )
        state = dict(loaded)
        statistics = directory / "per_channel_statistics.json"
        if statistics.exists():
            state |= _statistics(statistics)
        return dict(config), state, pth
    vae = directory / "vae"
    config = diffusers_config(vae / "config.json", "VAE")
    weights = vae / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        raise CheckpointNotFoundError(
            "does not exist (LTX-Video reads the VAE from this one file)",
            path=weights,
            fix="pass a diffusers-format LTX-Video directory with its vae/ folder complete",
        )
    renames = _ltx("ltx_video.utils.diffusers_config_mapping.VAE_KEYS_RENAME_DICT")
    state = read_weights(resolve_ckpt_dir(weights))
    return config, rename_keys(state, renames), weights


def _statistics(path: Path) -> dict[str, torch.Tensor]:
    data = _read_json(path, "per_channel_statistics.json")
    try:
        columns = list(zip(*data["data"], strict=True))
        table = {
            column: torch.tensor(values) for column, values in zip(data["columns"], columns, strict=True)
        }
        std_of_means = table["std-of-means"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CorruptCheckpointError(
            f"is not a table with a 'std-of-means' column ({type(exc).__name__}: {exc})",
            path=path,
            fix="expected {'columns': [...], 'data': [[...], ...]} as LTX-Video writes it",
        ) from None
    return {
        f"{STATISTICS_PREFIX}std-of-means": std_of_means,
        f"{STATISTICS_PREFIX}mean-of-means": table.get("mean-of-means", torch.zeros_like(std_of_means)),
    }


def scheduler_directory_config(directory: Path) -> dict[str, Any]:
    """``RectifiedFlowScheduler.from_pretrained(<diffusers directory>)``'s config (Lightricks' only)."""
    return diffusers_config(directory / "scheduler" / "scheduler_config.json", "scheduler")
