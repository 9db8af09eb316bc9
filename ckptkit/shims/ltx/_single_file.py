"""An LTX-Video single-file checkpoint: resolving the file and reading its embedded config."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ckptkit.adapters._build import read_weights
from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.safetensors_header import read_header
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = ["COMPONENT_PREFIXES", "DEFAULT_REPO", "LTXSingleFile", "read_single_file"]

#: Where LTX-Video's scripts fetch a checkpoint named by file name alone.
DEFAULT_REPO = "Lightricks/LTX-Video"
#: Component -> key prefix in the single file.
COMPONENT_PREFIXES = {"transformer": "model.diffusion_model.", "vae": "vae."}


@dataclass
class LTXSingleFile:
    """An LTX-Video single-file checkpoint: its embedded config and where its weights are.

    Attributes:
        ckpt: the resolved file.
        config: the whole ``config`` JSON of the metadata.
        metadata: the file's other metadata entries.
    """

    ckpt: CheckpointDir
    config: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.ckpt.weight_files[0]

    @property
    def transformer_config(self) -> dict[str, Any]:
        return self._part("transformer")

    @property
    def vae_config(self) -> dict[str, Any]:
        return self._part("vae")

    @property
    def scheduler_config(self) -> dict[str, Any]:
        return self._part("scheduler")

    def _part(self, name: str) -> dict[str, Any]:
        part = self.config.get(name)
        if not isinstance(part, dict):
            raise CorruptCheckpointError(
                f"the embedded config has no {name!r} part (it has: {', '.join(sorted(self.config))})",
                path=self.path,
                fix="use a release of LTX-Video whose single file embeds the full config",
            )
        return part

    def state_dict(
        self, component: str, *, dtype: torch.dtype | str | None = None
    ) -> dict[str, torch.Tensor]:
        """The weights of ``"transformer"`` or ``"vae"``, prefix stripped, floating ones cast to ``dtype``.

        Raises:
            CorruptCheckpointError: the file holds no weights of that component.
        """
        prefix = COMPONENT_PREFIXES.get(component)
        if prefix is None:
            raise ValueError(f"component must be one of {sorted(COMPONENT_PREFIXES)}, not {component!r}")
        state = read_weights(
            self.ckpt, prefix=prefix, dtype=to_torch_dtype(dtype) if dtype is not None else None
        )
        if not state:
            raise CorruptCheckpointError(
                f"holds no {component} weights (no keys start with {prefix!r})",
                path=self.path,
                fix="pass an LTX-Video single-file checkpoint",
            )
        return state

    def transformer_state_dict(self, *, dtype: torch.dtype | str | None = None) -> dict[str, torch.Tensor]:
        return self.state_dict("transformer", dtype=dtype)

    def vae_state_dict(self, *, dtype: torch.dtype | str | None = None) -> dict[str, torch.Tensor]:
        return self.state_dict("vae", dtype=dtype)


def read_single_file(
    ckpt_path: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    revision: str | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
) -> LTXSingleFile:
    """Resolve an LTX-Video single file and read its embedded config (no tensor data is read).

    Args:
        ckpt_path: a local ``.safetensors`` file, ``"org/repo/file.safetensors"``, or a bare file
            name, which is looked up in ``Lightricks/LTX-Video`` as LTX-Video's scripts do.
        cache_dir: the hub cache to look in (hub forms).
        revision: branch, tag or commit (hub forms).
        local_files_only: never download.
        token: hub token (hub forms).

    Raises:
        CheckpointNotFoundError: no such file locally or in the cache/hub.
        CorruptCheckpointError: not safetensors, or no ``config`` JSON in its metadata.

    Example:
        >>> single = read_single_file("ltxv-2b-0.9.8-distilled.safetensors")  # doctest: +SKIP
        >>> single.transformer_config["num_layers"]  # doctest: +SKIP
        28
    """
    spec = os.fspath(ckpt_path)
    path = Path(os.path.expanduser(spec))
    if not path.exists() and "/" not in spec:
        spec = f"{DEFAULT_REPO}/{spec}"
    hub: dict[str, Any] = {
        "cache_dir": cache_dir,
        "revision": revision,
        "local_files_only": local_files_only,
        "token": token,
    }
    ckpt = resolve_ckpt_dir(
        path if path.exists() else spec, **{k: v for k, v in hub.items() if v is not None}
    )
    if ckpt.format != "safetensors" or len(ckpt.weight_files) != 1:
        raise CorruptCheckpointError(
            "is not an LTX-Video single-file checkpoint (one .safetensors file)",
            path=ckpt.weight_files[0] if ckpt.weight_files else ckpt.path,
            fix="pass the .safetensors file itself",
        )
    file = ckpt.weight_files[0]
    metadata = dict(read_header(file).metadata or {})
    text = metadata.pop("config", None)
    if text is None:
        raise CorruptCheckpointError(
            "has no 'config' entry in its safetensors metadata",
            path=file,
            fix="use an LTX-Video release that embeds its config (0.9.1 or later), "
            "or load the diffusers-format repo with ckptkit.adapters",
        )
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise CorruptCheckpointError(f"its metadata 'config' is not JSON ({exc})", path=file) from None
    if not isinstance(config, dict):
        raise CorruptCheckpointError("its metadata 'config' is not a JSON object", path=file)
    return LTXSingleFile(ckpt, config, metadata)
