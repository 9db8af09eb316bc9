"""Open-Sora's ``load_checkpoint`` functions: 1.2/1.3 (``opensora.utils.ckpt_utils``), 2.0 (``opensora.utils.ckpt``).

Both read through ckptkit (validated headers, ``weights_only`` pickles, hub caches honoured) and
then do to the tensors what the upstream function does, so the model ends up holding the same
values. Where upstream leaves weights random without an error (a PixArt checkpoint under
``"state_dict"`` in 1.3, ``blocks.*`` keys an STDiT3 does not have) the shim loads them instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ckptkit.adapters._build import read_weights
from ckptkit.errors import CheckpointNotFoundError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.io.torch_files import load_torch_file, unwrap_state_dict
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = ["adapt_16ch_vae", "find_model", "load_checkpoint", "load_checkpoint_v2", "reparameter"]

logger = logging.getLogger("ckptkit")

#: Open-Sora 1.x drops these from ``.pt``/``.pth`` checkpoints: the model rebuilds them for its input size.
REBUILT_KEYS = ("pos_embed", "pos_embed_temporal")
#: Open-Sora 1.x drops the temporal embedding of these releases (Latte's ``temp_embed``).
LATTE_RELEASES = ("Latte-XL-2-256x256-ucf101.pt",)
#: Open-Sora 1.x's ``pretrained_models``: a bare release name -> where it is fetched from ("org/repo/file"
#: on the hub, or a URL ckptkit does not download from). Upstream keeps them in ./pretrained_models/.
RELEASES = {
    "DiT-XL-2-512x512.pt": "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-512x512.pt",
    "DiT-XL-2-256x256.pt": "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt",
    "Latte-XL-2-256x256-ucf101.pt": "maxin-cn/Latte/ucf101.pt",
    "PixArt-XL-2-256x256.pth": "PixArt-alpha/PixArt-alpha/PixArt-XL-2-256x256.pth",
    "PixArt-XL-2-SAM-256x256.pth": "PixArt-alpha/PixArt-alpha/PixArt-XL-2-SAM-256x256.pth",
    "PixArt-XL-2-512x512.pth": "PixArt-alpha/PixArt-alpha/PixArt-XL-2-512x512.pth",
    "PixArt-XL-2-1024-MS.pth": "PixArt-alpha/PixArt-alpha/PixArt-XL-2-1024-MS.pth",
    "OpenSora-v1-16x256x256.pth": "hpcai-tech/Open-Sora/OpenSora-v1-16x256x256.pth",
    "OpenSora-v1-HQ-16x256x256.pth": "hpcai-tech/Open-Sora/OpenSora-v1-HQ-16x256x256.pth",
    "OpenSora-v1-HQ-16x512x512.pth": "hpcai-tech/Open-Sora/OpenSora-v1-HQ-16x512x512.pth",
    "PixArt-Sigma-XL-2-256x256.pth": "PixArt-alpha/PixArt-Sigma/PixArt-Sigma-XL-2-256x256.pth",
    "PixArt-Sigma-XL-2-512-MS.pth": "PixArt-alpha/PixArt-Sigma/PixArt-Sigma-XL-2-512-MS.pth",
    "PixArt-Sigma-XL-2-1024-MS.pth": "PixArt-alpha/PixArt-Sigma/PixArt-Sigma-XL-2-1024-MS.pth",
    "PixArt-Sigma-XL-2-2K-MS.pth": "PixArt-alpha/PixArt-Sigma/PixArt-Sigma-XL-2-2K-MS.pth",
}
#: Open-Sora 1.x file suffixes read with ``torch.load`` (everything else is safetensors or a directory).
TORCH_SUFFIXES = (".pt", ".pth")


def load_checkpoint(
    model: nn.Module,
    ckpt_path: str | os.PathLike[str],
    save_as_pt: bool = False,
    model_name: str = "model",
    strict: bool = False,
    adapt_16ch: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Open-Sora 1.2/1.3 ``opensora.utils.ckpt_utils.load_checkpoint``, reading through ckptkit.

    ``ckpt_path`` may be a ``.pt``/``.pth`` file, a ``.safetensors`` file, a ColossalAI booster
    directory (weights in ``<dir>/<model_name>``, or in the directory itself) or
    ``"org/repo/file"`` on the hub (found in ``cache_dir`` first). What upstream does to the tensors
    is done here (see :func:`reparameter`): a PixArt/DiT release is unwrapped from ``"state_dict"``
    /``"ema"``, ``pos_embed`` dropped, a 2D patch embedding given the time axis, the caption
    embedding padded with its own last row or truncated, and an STDiT3 filled from a PixArt
    checkpoint gets ``blocks.*`` as ``spatial_blocks.*``. ``adapt_16ch`` widens a 4-channel STDiT3
    checkpoint to a 16-channel VAE as 1.3 does (for every format; upstream only for ``.pt``).

    Args:
        model: the module to fill (in place).
        ckpt_path: where the weights are.
        save_as_pt: for a booster directory, also write ``<dir>/<model_name>_ckpt.pt``.
        model_name: the subfolder of a booster directory.
        strict: require the keys to match exactly (``load_state_dict(strict=)``).
        adapt_16ch: apply Open-Sora 1.3's ``adapt_16ch_vae`` to the checkpoint.
        cache_dir: the hub cache for ``org/repo/file`` paths.
        device: where the weights are read to.

    Returns:
        ``model`` (1.3 returns it; 1.2 returned ``None``).

    Raises:
        CheckpointNotFoundError: nothing at ``ckpt_path``.
        UnsafeCheckpointError: a ``.pt`` file that needs more than plain tensors (upstream would
            unpickle it, running whatever code it names; the shim refuses).
        ValueError: ``save_as_pt`` with a file (upstream writes it only for directories).
        RuntimeError: ``strict`` and the keys differ, or a shape differs (from ``load_state_dict``).

    Example:
        >>> load_checkpoint(model, "hpcai-tech/OpenSora-STDiT-v3/model.safetensors")  # doctest: +SKIP
    """
    path = _local(ckpt_path)
    if save_as_pt and not (path is not None and path.is_dir()):
        raise ValueError(
            f"save_as_pt=True writes <dir>/{model_name}_ckpt.pt for a ColossalAI directory; "
            f"{os.fspath(ckpt_path)!r} is not one (leave save_as_pt=False)"
        )
    state, torch_file = _read(path, ckpt_path, model_name, cache_dir)
    # .pt/.pth files get all of 1.x's reparameter; other formats only what makes them fit.
    state = reparameter(state, Path(os.fspath(ckpt_path)).name, model) if torch_file else _fit(state, model)
    if adapt_16ch:
        state = adapt_16ch_vae(state)
    _fill(model, state, device, strict)
    if save_as_pt and path is not None:
        target = path / f"{model_name}_ckpt.pt"
        partial = target.with_name(target.name + ".partial")
        torch.save(model.state_dict(), partial)
        os.replace(partial, target)
        logger.info("Model checkpoint saved to %s", target)
    return model


def load_checkpoint_v2(
    model: nn.Module,
    path: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
    device_map: torch.device | str = "cpu",
    cai_model_name: str = "model",
    strict: bool = False,
    rename_keys: Mapping[str, str] | None = None,
) -> nn.Module:
    """Open-Sora 2.0 ``opensora.utils.ckpt.load_checkpoint``, reading through ckptkit.

    Import it under the upstream name: ``from ckptkit.shims.opensora import load_checkpoint_v2 as
    load_checkpoint``. A ``.safetensors``, ``.pt``/``.pth`` file, ColossalAI directory
    (``<path>/<cai_model_name>``) or ``"org/repo/file"`` on the hub; the tensors are loaded as
    stored (2.0 adapts nothing). ``rename_keys`` maps a substring of the stored names to its
    replacement, the first match per key, as upstream; the shim applies it to every format
    (upstream only to ``.safetensors``).

    Args:
        model: the module to fill (in place).
        path: where the weights are.
        cache_dir: the hub cache for ``org/repo/file`` paths.
        device_map: the device the weights are read to (a device, not an accelerate map).
        cai_model_name: the subfolder of a ColossalAI directory.
        strict: require the keys to match exactly.
        rename_keys: ``{old substring: new substring}`` applied to the stored names.

    Returns:
        ``model``.

    Raises:
        CheckpointNotFoundError: nothing at ``path``.
        UnsafeCheckpointError: a ``.pt`` file that needs more than plain tensors.
        TypeError: ``device_map`` is not a device.
        RuntimeError: ``strict`` and the keys differ, or a shape differs.

    Example:
        >>> load_checkpoint_v2(model, "hpcai-tech/Open-Sora-v2/Open_Sora_v2.safetensors", device_map="cuda")  # doctest: +SKIP
    """
    if not isinstance(device_map, (str, torch.device)):
        raise TypeError(
            f"load_checkpoint: device_map must be a device (str or torch.device), not {type(device_map).__name__}"
        )
    state, _ = _read(_local(path), path, cai_model_name, cache_dir)
    if rename_keys is not None:
        state = rename(state, rename_keys)
    _fill(model, state, device_map, strict)
    return model


def find_model(model_name: str | os.PathLike[str], model: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """Open-Sora 1.x ``find_model``: the state dict of a release name or a ``.pt``/``.pth`` file, reparametered.

    Read as :func:`load_checkpoint` reads it (a bare release name from ``./pretrained_models`` or
    its hub repo; ``weights_only``), then :func:`reparameter` for ``model``.

    Raises:
        CheckpointNotFoundError: nothing there.
        UnsafeCheckpointError: a pickle that needs more than tensors.

    Example:
        >>> state = find_model("PixArt-XL-2-512x512.pth", model=model)  # doctest: +SKIP
    """
    state, _ = _read(_local(model_name), model_name, "model", None)
    return reparameter(state, Path(os.fspath(model_name)).name, model)


def rename(state: dict[str, torch.Tensor], rename_keys: Mapping[str, str]) -> dict[str, torch.Tensor]:
    """Open-Sora 2.0's key renaming: the first ``old`` found in a key is replaced (everywhere in it) by ``new``."""
    renamed = {}
    for key, value in state.items():
        new_key = key
        for old, new in rename_keys.items():
            if old in key:
                new_key = key.replace(old, new)
                logger.info("Renamed %s to %s in the loaded state_dict", key, new_key)
                break
        renamed[new_key] = value
    return renamed


def reparameter(
    state: dict[str, torch.Tensor], name: str | None = None, model: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """Open-Sora 1.x ``reparameter``: what it does to a ``.pt``/``.pth`` checkpoint for ``model``.

    Drops ``pos_embed``/``pos_embed_temporal`` (and Latte's ``temp_embed``); gives a 2D
    ``x_embedder.proj.weight`` the time axis when the model's is 3D; pads ``y_embedder.y_embedding``
    with the checkpoint's last row, or truncates it, to the model's caption length; renames
    ``blocks.`` to ``spatial_blocks.`` for an STDiT3 filled from a checkpoint that has no
    ``spatial_blocks``. Upstream decides some of these by the release's file name; here the
    tensors decide, so a renamed file loads the same.

    Args:
        state: the state dict (changed in place and returned); one nested under ``"state_dict"`` or
            ``"ema"`` (a PixArt or Latte release) is unwrapped first, as upstream does.
        name: the checkpoint's file name.
        model: the module it is for (``None``: only the drops, nothing fitted to a model).
    """
    for key in ("ema", "state_dict"):
        if isinstance(state.get(key), Mapping):
            state = state[key]  # type: ignore[assignment]
    for key in REBUILT_KEYS:
        state.pop(key, None)
    release = os.path.basename(name) if name is not None else None
    if release in LATTE_RELEASES:
        state.pop("temp_embed", None)
    if model is not None:
        return _fit(state, model)
    # No model to look at: the 2D releases get the time axis by name, as upstream decides it.
    proj = "x_embedder.proj.weight"
    if (
        release in RELEASES
        and not release.startswith("OpenSora-v1")
        and proj in state
        and state[proj].dim() == 4
    ):
        state[proj] = state[proj].unsqueeze(2)
    return state


def _fit(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The adaptations without which ``load_state_dict`` would fail or leave weights random."""
    own = model.state_dict(keep_vars=True)
    for key in REBUILT_KEYS:
        if key in state and key in own and state[key].shape != own[key].shape:
            state.pop(key)
    proj = "x_embedder.proj.weight"
    if proj in state and proj in own and state[proj].dim() == 4 and own[proj].dim() == 5:
        state[proj] = state[proj].unsqueeze(2)
    caption = "y_embedder.y_embedding"
    if caption in state and caption in own:
        have, want = state[caption].shape[0], own[caption].shape[0]
        if have < want:
            logger.info("Extend y_embedding from %s to %s", have, want)
            last = state[caption][-1:].expand(want - have, -1)
            state[caption] = torch.cat([state[caption], last], dim=0)
        elif have > want:
            logger.info("Shrink y_embedding from %s to %s", have, want)
            state[caption] = state[caption][:want]
    if (
        type(model).__name__ == "STDiT3"
        and not any(k.startswith("blocks.") for k in own)
        and any("blocks." in k for k in state)
        and not any(k.startswith("spatial_blocks.") for k in state)
    ):
        state = {
            k.replace("blocks.", "spatial_blocks.") if "blocks." in k else k: v for k, v in state.items()
        }
    return state


def adapt_16ch_vae(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Open-Sora 1.3 ``adapt_16ch_vae``: a 4-channel STDiT3-XL/2 checkpoint for a 16-channel VAE.

    The patch embedding is repeated over the new input channels (divided by 4); the final layer's
    output rows (``patch x (mean, sigma) x 4 channels``) repeated to 16 channels.
    """
    if "x_embedder.proj.weight" in state_dict:
        state_dict["x_embedder.proj.weight"] = state_dict["x_embedder.proj.weight"].repeat(1, 4, 1, 1, 1) / 4
        state_dict["final_layer.linear.weight"] = (
            state_dict["final_layer.linear.weight"].reshape(4, 2, 4, -1).repeat(1, 1, 4, 1).reshape(128, -1)
        )
        state_dict["final_layer.linear.bias"] = (
            state_dict["final_layer.linear.bias"].reshape(4, 2, 4).repeat(1, 1, 4).reshape(128)
        )
    return state_dict


def _local(spec: str | os.PathLike[str]) -> Path | None:
    path = Path(os.path.expanduser(os.fspath(spec)))
    return path if path.exists() else None


def _read(
    path: Path | None,
    spec: str | os.PathLike[str],
    model_name: str,
    cache_dir: str | os.PathLike[str] | None,
) -> tuple[dict[str, torch.Tensor], bool]:
    """(the state dict, whether it came from a torch ``.pt``/``.pth`` file)."""
    if path is None and os.fspath(spec) in RELEASES:
        return _release(os.fspath(spec), cache_dir), True
    if path is None:
        ckpt = resolve_ckpt_dir(os.fspath(spec), cache_dir=cache_dir)
        torch_file = (
            ckpt.format == "torch" and bool(ckpt.weight_files) and _is_torch_name(ckpt.weight_files[0])
        )
        if torch_file:
            return _unwrap(load_torch_file(ckpt.weight_files[0]), Path(ckpt.weight_files[0])), True
        return read_weights(ckpt), False
    if path.is_dir():
        return read_weights(_booster_dir(path, model_name)), False
    if _is_torch_name(path):
        return _unwrap(load_torch_file(path), path), True
    return read_weights(resolve_ckpt_dir(path)), False


def _release(name: str, cache_dir: str | os.PathLike[str] | None) -> dict[str, torch.Tensor]:
    """A release named as in Open-Sora's configs: ./pretrained_models/<name> as upstream keeps it, else the hub."""
    local = Path("pretrained_models") / name
    if local.is_file():
        return _unwrap(load_torch_file(local), local)
    source = RELEASES[name]
    if source.startswith("https://"):
        raise CheckpointNotFoundError(
            f"{name} is not in ./pretrained_models and is not on the hub (Open-Sora downloads it from {source})",
            path=local.absolute(),
            fix=f"download {source} to {local}",
        )
    ckpt = resolve_ckpt_dir(source, cache_dir=cache_dir)
    return _unwrap(load_torch_file(ckpt.weight_files[0]), Path(ckpt.weight_files[0]))


def _is_torch_name(path: str | os.PathLike[str]) -> bool:
    return os.fspath(path).endswith(TORCH_SUFFIXES)


def _fill(model: nn.Module, state: dict[str, torch.Tensor], device: str | torch.device, strict: bool) -> None:
    target = torch.device(device)
    state = {k: v.to(target) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=strict)
    logger.info("Missing keys: %s", missing)
    logger.info("Unexpected keys: %s", unexpected)


def _booster_dir(path: Path, model_name: str) -> CheckpointDir:
    if (path / model_name).is_dir():
        return resolve_ckpt_dir(path, subfolder=model_name)
    try:
        return resolve_ckpt_dir(path)
    except CheckpointNotFoundError:
        raise CheckpointNotFoundError(
            f"no weights in this directory nor in its {model_name!r} subfolder",
            path=path,
            fix="pass the file, or the directory a ColossalAI booster saved the model in",
        ) from None


def _unwrap(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    # Latte releases nest under "ema", PixArt releases under "state_dict" (Open-Sora unwraps both).
    for key in ("ema", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            obj = obj[key]
    return unwrap_state_dict(obj, None, path)
