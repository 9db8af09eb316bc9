"""LTX-Video loader entry points, loading through ckptkit.

LTX-Video ships one ``.safetensors`` file per release: its metadata holds a ``config`` JSON with
``transformer``, ``vae`` and ``scheduler`` parts, the transformer's weights are prefixed
``model.diffusion_model.`` and the VAE's ``vae.`` (with the latent statistics under
``vae.per_channel_statistics.``). The text encoder is the T5 of ``PixArt-alpha/PixArt-XL-2-1024-MS``
(``subfolder="text_encoder"``). Swap the import::

    # from ltx_video.inference import create_ltx_video_pipeline, create_transformer
    from ckptkit.shims.ltx import create_ltx_video_pipeline, create_transformer

or leave LTX-Video's code as it is and call :func:`install` first: its ``inference.py`` then loads
through ckptkit (:func:`uninstall` puts LTX-Video's loaders back).

The model classes are LTX-Video's own (``Transformer3DModel``, ``CausalVideoAutoencoder``,
``RectifiedFlowScheduler``), so the ``ltx-video`` package must be installed for them; what ckptkit
replaces is finding and reading the weights (offline first, only the needed files fetched, headers
validated, no float32 copy of a bf16 transformer).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ckptkit.adapters._build import fill_model, read_weights
from ckptkit.adapters.t5 import load_t5
from ckptkit.errors import (
    CheckpointNotFoundError,
    CorruptCheckpointError,
    ModelMismatchError,
    UnsafeCheckpointError,
)
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.format.safetensors_header import read_header
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.resolve.resolve import resolve_ckpt_dir
from ckptkit.shims._patch import Patches

__all__ = [
    "COMPONENT_PREFIXES",
    "DEFAULT_REPO",
    "DEFAULT_TEXT_ENCODER",
    "LTXSingleFile",
    "create_ltx_video_pipeline",
    "create_transformer",
    "install",
    "installed",
    "load_component",
    "load_scheduler",
    "load_text_encoder",
    "load_vae",
    "read_single_file",
    "uninstall",
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


def _ltx(name: str) -> Any:
    """An attribute of the installed LTX-Video package (its model classes and config mappings)."""
    import importlib

    module_name, _, attr = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"{name} comes from LTX-Video ({exc}); install it (`pip install ltx-video`) or pass model_class="
        ) from None
    return getattr(module, attr)


def _local_directory(path: str | os.PathLike[str]) -> Path | None:
    candidate = Path(os.path.expanduser(os.fspath(path)))
    return candidate if candidate.is_dir() else None


def _diffusers_transformer(directory: Path, model_class: type) -> torch.nn.Module:
    """``Transformer3DModel.from_pretrained(<diffusers-format directory>)``, as LTX-Video does it.

    The diffusers config is mapped to LTX-Video's (only the configs of ``Lightricks/LTX-Video`` are
    known to it), the keys renamed with its ``TRANSFORMER_KEYS_RENAME_DICT`` and the model built on
    meta and filled with ``assign=True`` (the stored dtype is kept), strictly.
    """
    mapping = _ltx("ltx_video.utils.diffusers_config_mapping.diffusers_and_ours_config_mapping")
    hashable = _ltx("ltx_video.utils.diffusers_config_mapping.make_hashable_key")
    renames = _ltx("ltx_video.utils.diffusers_config_mapping.TRANSFORMER_KEYS_RENAME_DICT")
    config_path = directory / "transformer" / "config.json"
    if not config_path.is_file():
        raise CheckpointNotFoundError(
            "has no transformer/config.json",
            path=directory,
            fix="pass an LTX-Video single .safetensors file or a diffusers-format LTX-Video directory",
        )
    key = hashable(json.loads(config_path.read_text()))
    if key not in mapping:
        raise CorruptCheckpointError(
            "its diffusers transformer config is not one of Lightricks/LTX-Video's (LTX-Video maps only those)",
            path=config_path,
            fix="use a single-file release, or the diffusers classes through ckptkit.adapters.load_dit",
        )
    ckpt = resolve_ckpt_dir(directory / "transformer", weights_name="diffusion_pytorch_model")
    state = {}
    for name, tensor in read_weights(ckpt).items():
        for old, new in renames.items():
            name = name.replace(old, new)
        state[name] = tensor
    with torch.device("meta"):
        model = model_class.from_config(mapping[key])  # type: ignore[attr-defined]
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
    """LTX-Video's ``CausalVideoAutoencoder.from_pretrained(<single file>)``.

    As LTX-Video does: the VAE is built from the embedded ``vae`` config, cast to ``torch_dtype`` when
    given (else float32, whatever the file stores), and filled by the class's own ``load_state_dict``,
    which renames the legacy keys and registers the latent statistics (``std_of_means``,
    ``mean_of_means`` from ``per_channel_statistics.*``) that ``normalize_latents`` needs.

    Raises:
        CorruptCheckpointError: no config or VAE weights in the file.
        ModelMismatchError: the weights do not fit the config.
    """
    single = (
        pretrained_model_name_or_path
        if isinstance(pretrained_model_name_or_path, LTXSingleFile)
        else read_single_file(pretrained_model_name_or_path, **resolve_kwargs)
    )
    if model_class is None:
        model_class = _ltx("ltx_video.models.autoencoders.causal_video_autoencoder.CausalVideoAutoencoder")
    config = dict(single.vae_config)
    state = single.vae_state_dict()
    model = model_class.from_config(config)  # type: ignore[attr-defined,union-attr]
    if torch_dtype is not None:
        model.to(to_torch_dtype(torch_dtype))
    _load_strict(model, state, single.path)
    return model


def load_scheduler(ckpt_path: str | os.PathLike[str] | LTXSingleFile, **resolve_kwargs: Any) -> Any:
    """LTX-Video's ``RectifiedFlowScheduler.from_pretrained(<single file>)``: from the embedded config.

    Only the file's header is read (LTX-Video reads every tensor to get at the metadata).
    """
    single = (
        ckpt_path if isinstance(ckpt_path, LTXSingleFile) else read_single_file(ckpt_path, **resolve_kwargs)
    )
    scheduler_class = _ltx("ltx_video.schedulers.rf.RectifiedFlowScheduler")
    return scheduler_class.from_config(single.scheduler_config)


def create_ltx_video_pipeline(
    ckpt_path: str | os.PathLike[str],
    precision: str,
    text_encoder_model_name_or_path: str | os.PathLike[str],
    sampler: str | None = None,
    device: str | torch.device | None = None,
    enhance_prompt: bool = False,
    prompt_enhancer_image_caption_model_name_or_path: str | None = None,
    prompt_enhancer_llm_model_name_or_path: str | None = None,
) -> Any:
    """LTX-Video's ``create_ltx_video_pipeline``: the same ``LTXVideoPipeline``, loaded through ckptkit.

    The transformer (:func:`create_transformer`), VAE (:func:`load_vae`), scheduler (from the
    embedded config, or ``sampler``), the T5 text encoder (``subfolder="text_encoder"``, only its
    files fetched) and ``T5Tokenizer`` (``subfolder="tokenizer"``) end where LTX-Video puts them:
    on ``device``, the VAE and text encoder in bf16, ``allowed_inference_steps`` from the metadata.

    Raises:
        UnsafeCheckpointError: ``enhance_prompt=True``: its caption model loads with
            ``trust_remote_code=True`` (code from the hub); use LTX-Video's own function for it.
        CheckpointNotFoundError: ``ckpt_path`` does not exist.
    """
    if enhance_prompt:
        raise UnsafeCheckpointError(
            "enhance_prompt=True loads the prompt-enhancer models with trust_remote_code=True "
            "(it runs code from the hub); ckptkit does not",
            path=prompt_enhancer_image_caption_model_name_or_path,
            fix="create the pipeline with enhance_prompt=False, or call ltx_video.inference."
            "create_ltx_video_pipeline for prompt enhancement",
        )
    from transformers import T5Tokenizer

    pipeline_class = _ltx("ltx_video.pipelines.pipeline_ltx_video.LTXVideoPipeline")
    patchifier_class = _ltx("ltx_video.models.transformers.symmetric_patchifier.SymmetricPatchifier")
    scheduler_class = _ltx("ltx_video.schedulers.rf.RectifiedFlowScheduler")
    path = Path(os.fspath(ckpt_path))
    if not path.exists():
        raise CheckpointNotFoundError(
            "does not exist (--ckpt_path)", path=path, fix="pass the LTX-Video .safetensors file"
        )
    single = read_single_file(path)
    allowed_inference_steps = single.config.get("allowed_inference_steps", None)
    vae = load_vae(single)
    transformer = create_transformer(path, precision)
    if sampler == "from_checkpoint" or not sampler:
        scheduler = load_scheduler(single)
    else:
        scheduler = scheduler_class(
            sampler=("Uniform" if sampler.lower() == "uniform" else "LinearQuadratic")
        )
    text_encoder, _ = load_text_encoder(text_encoder_model_name_or_path, with_tokenizer=False)
    tokenizer = T5Tokenizer.from_pretrained(text_encoder_model_name_or_path, subfolder="tokenizer")
    transformer = transformer.to(device)
    vae = vae.to(device).to(torch.bfloat16)
    text_encoder = text_encoder.to(device).to(torch.bfloat16)
    pipeline = pipeline_class(
        transformer=transformer,
        patchifier=patchifier_class(patch_size=1),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        vae=vae,
        prompt_enhancer_image_caption_model=None,
        prompt_enhancer_image_caption_processor=None,
        prompt_enhancer_llm_model=None,
        prompt_enhancer_llm_tokenizer=None,
        allowed_inference_steps=allowed_inference_steps,
    )
    return pipeline.to(device)


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
    if not with_tokenizer:
        model = load_t5(
            text_encoder_model_name_or_path,
            subfolder=subfolder,
            dtype=dtype,
            device_map=device_map,
            cache_dir=cache_dir,
            revision=revision,
            local_files_only=local_files_only,
            token=token,
        )
        return model, None
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


# --- install(): LTX-Video's own code path on ckptkit -------------------------------------------------

_PATCHES = Patches("ltx_video")


def _transformer_from_pretrained(cls: type, pretrained_model_path: Any, *args: Any, **kwargs: Any) -> Any:
    # LTX-Video's create_transformer passes dtype=float8_e4m3fn, which its from_pretrained ignores
    # (an fp8 release is stored in fp8): honoured here as "must already be stored so".
    dtype = kwargs.pop("dtype", None)
    if args or kwargs:
        raise TypeError(
            f"Transformer3DModel.from_pretrained (ckptkit) got unsupported arguments: "
            f"{[*map(repr, args), *sorted(kwargs)]}"
        )
    directory = _local_directory(pretrained_model_path)
    if directory is not None:
        model = _diffusers_transformer(directory, cls)
    else:
        model = load_component(pretrained_model_path, "transformer", cls).train()
    if dtype is not None:
        stored = {t.dtype for t in model.parameters() if t.is_floating_point()}
        if stored != {to_torch_dtype(dtype)}:
            raise ValueError(
                f"dtype={dtype} but the checkpoint stores {sorted(map(str, stored))}: LTX-Video loads "
                "the stored dtype (cast the model afterwards)"
            )
    return model


def _vae_from_pretrained(cls: type, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
    torch_dtype = kwargs.pop("torch_dtype", None)
    if args or kwargs:
        raise TypeError(
            f"CausalVideoAutoencoder.from_pretrained (ckptkit) got unsupported arguments: "
            f"{[*map(repr, args), *sorted(kwargs)]}"
        )
    return load_vae(pretrained_model_name_or_path, torch_dtype=torch_dtype, model_class=cls)


def _targets() -> list[tuple[Any, str, Any]]:
    inference = _ltx("ltx_video.inference")
    transformer = _ltx("ltx_video.models.transformers.transformer3d.Transformer3DModel")
    vae = _ltx("ltx_video.models.autoencoders.causal_video_autoencoder.CausalVideoAutoencoder")
    scheduler = _ltx("ltx_video.schedulers.rf.RectifiedFlowScheduler")
    return [
        (inference, "create_transformer", create_transformer),
        (inference, "create_ltx_video_pipeline", create_ltx_video_pipeline),
        (transformer, "from_pretrained", classmethod(_transformer_from_pretrained)),
        (vae, "from_pretrained", classmethod(_vae_from_pretrained)),
        (scheduler, "from_pretrained", staticmethod(load_scheduler)),
    ]


def install() -> None:
    """Make the installed LTX-Video load through ckptkit, its own code unchanged.

    Patches ``ltx_video.inference.create_transformer`` and ``create_ltx_video_pipeline``, and the
    ``from_pretrained`` of ``Transformer3DModel``, ``CausalVideoAutoencoder`` and
    ``RectifiedFlowScheduler``; ``inference.py``'s ``infer()`` then runs on ckptkit. Installing twice
    is a no-op; :func:`uninstall` restores the originals.

    Raises:
        ImportError: LTX-Video is not installed.
    """
    _PATCHES.install(_targets)


def uninstall() -> None:
    """Put LTX-Video's own loaders back (a no-op when :func:`install` was not called)."""
    _PATCHES.uninstall()


@contextmanager
def installed() -> Iterator[None]:
    """:func:`install` for the ``with`` block, :func:`uninstall` after it (even on error)."""
    was = _PATCHES.installed
    install()
    try:
        yield
    finally:
        if not was:
            uninstall()
