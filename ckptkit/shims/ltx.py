"""LTX-Video loader entry points, loading through ckptkit.

LTX-Video ships one ``.safetensors`` file per release: its metadata holds a ``config`` JSON with
``transformer``, ``vae`` and ``scheduler`` parts, the transformer's weights are prefixed
``model.diffusion_model.`` and the VAE's ``vae.``. The text encoder is the T5 of
``PixArt-alpha/PixArt-XL-2-1024-MS`` (``subfolder="text_encoder"``). Swap the import::

    # from ltx_video.inference import create_transformer, load_text_encoder
    from ckptkit.shims.ltx import create_transformer, load_text_encoder

Local files, hub repos and hub caches all work offline first; only the files needed are fetched.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ckptkit.adapters._build import fill_model, read_weights
from ckptkit.adapters.t5 import load_t5
from ckptkit.errors import CorruptCheckpointError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.safetensors_header import read_header
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.resolve.resolve import resolve_ckpt_dir

__all__ = [
    "COMPONENT_PREFIXES",
    "DEFAULT_REPO",
    "DEFAULT_TEXT_ENCODER",
    "LTXSingleFile",
    "create_transformer",
    "load_component",
    "load_text_encoder",
    "read_single_file",
]

#: Where LTX-Video's scripts fetch a checkpoint named by file name alone.
DEFAULT_REPO = "Lightricks/LTX-Video"
#: The text encoder LTX-Video's scripts use.
DEFAULT_TEXT_ENCODER = "PixArt-alpha/PixArt-XL-2-1024-MS"
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
        model = model_class.from_config(config)  # type: ignore[attr-defined]
    fill_model(
        model,
        single.ckpt,
        dtype=None,
        keep_fp32_modules=(),
        device=torch.device(device),
        prefix=prefix,
    )
    return model.eval()


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
        ckpt_path: the single file (local, ``org/repo/file``, or a file name in ``Lightricks/LTX-Video``).
        precision: ``"bfloat16"`` casts to bf16; ``"float8_e4m3fn"`` keeps the fp8 weights and patches
            the model with Q8-Kernels (as LTX-Video does); anything else keeps the stored dtype.
        model_class: the transformer class (default: LTX-Video's ``Transformer3DModel``).
        device: where the weights are read to.
        resolve_kwargs: ``cache_dir``, ``revision``, ``local_files_only``, ``token``.

    Raises:
        ImportError: no ``model_class`` given and LTX-Video is not installed; or fp8 without Q8-Kernels.

    Example:
        >>> transformer = create_transformer("ltxv-2b-0.9.8-distilled.safetensors", "bfloat16")  # doctest: +SKIP
    """
    if model_class is None:
        from ltx_video.models.transformers.transformer3d import Transformer3DModel

        model_class = Transformer3DModel
    patch: Any = None
    if precision == "float8_e4m3fn":
        try:
            from q8_kernels.integration.patch_transformer import patch_diffusers_transformer

            patch = patch_diffusers_transformer
        except ImportError:
            raise ImportError(
                "precision='float8_e4m3fn' needs Q8-Kernels (https://github.com/Lightricks/LTX-Video-Q8-Kernels)"
            ) from None
    model = load_component(ckpt_path, "transformer", model_class, device=device, **resolve_kwargs)
    if precision == "bfloat16":
        model = model.to(torch.bfloat16)
    if patch is not None:
        patch(model)
    return model


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
) -> tuple[torch.nn.Module, Any]:
    """LTX-Video's text encoder and tokenizer: ``T5EncoderModel`` from ``subfolder="text_encoder"``.

    Only the text encoder's weights (and the tokenizer) are read or fetched, never the rest of
    the PixArt repo.

    Returns:
        ``(T5EncoderModel, tokenizer)``.

    Example:
        >>> text_encoder, tokenizer = load_text_encoder(dtype="bf16")  # doctest: +SKIP
    """
    model, tokenizer = load_t5(
        text_encoder_model_name_or_path,
        subfolder=subfolder,
        dtype=dtype,
        device_map=device_map,
        cache_dir=cache_dir,
        revision=revision,
        local_files_only=local_files_only,
        token=token,
        with_tokenizer=True,
        tokenizer_subfolder=tokenizer_subfolder,
    )
    return model, tokenizer
