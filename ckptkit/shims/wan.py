"""Wan2.1 / Wan2.2 native ``ckpt_dir`` layouts, loaded through ckptkit.

A Wan ``ckpt_dir`` holds the UMT5 encoder as ``models_t5_umt5-xxl-enc-bf16.pth``, its tokenizer in
``google/umt5-xxl/``, the VAE as ``Wan2.1_VAE.pth`` or ``Wan2.2_VAE.pth``, and the DiT as
``config.json`` + ``diffusion_pytorch_model*.safetensors`` (+ index) in the root, or, for the
Wan2.2 A14B models, in ``low_noise_model/`` and ``high_noise_model/``. Wan's code joins those names
onto ``checkpoint_dir``; :func:`wan_checkpoint` finds them (reporting what is missing up front) and
reads each part safely (``weights_only``), and :func:`load_dit` builds the DiT.

The loaders Wan's own code calls have drop-in replacements here, with Wan's names and signatures,
returning Wan's own objects (the ``wan`` package, from Wan2.1/Wan2.2 or the ``wan22`` release, must
be installed for its model classes)::

    # from wan.modules.t5 import T5EncoderModel
    # from wan.modules.vae2_1 import Wan2_1_VAE
    # from wan.modules.model import WanModel; WanModel.from_pretrained(ckpt_dir, subfolder=...)
    from ckptkit.shims.wan import T5EncoderModel, Wan2_1_VAE, load_dit

or, leaving Wan's ``generate.py`` unchanged, call :func:`install` first: ``WanModel.from_pretrained``,
``T5EncoderModel`` and the VAEs' ``_video_vae`` then load through ckptkit (:func:`uninstall`
restores them). Wan's ``.pth`` files are read with ``weights_only`` (a pickle that needs more than
tensors is refused with :class:`~ckptkit.UnsafeCheckpointError`, never executed).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ckptkit.adapters._build import PLANNED_DEVICE_MAPS, read_weights
from ckptkit.adapters._diffusers import load_diffusers_model
from ckptkit.errors import CheckpointNotFoundError, ModelMismatchError
from ckptkit.format.checkpoint import CheckpointDir
from ckptkit.io.tensors import to_torch_dtype
from ckptkit.io.torch_files import load_torch_file, unwrap_state_dict
from ckptkit.resolve.resolve import resolve_ckpt_dir
from ckptkit.shims._patch import Patches, temporarily

__all__ = [
    "DIT_SUBFOLDERS",
    "T5_CHECKPOINT",
    "T5_TOKENIZER",
    "VAE_CHECKPOINTS",
    "T5EncoderModel",
    "Wan2_1_VAE",
    "Wan2_2_VAE",
    "WanCheckpoint",
    "WanVAE",
    "install",
    "installed",
    "load_dit",
    "uninstall",
    "video_vae_2_1",
    "video_vae_2_2",
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


def _device_map(device_map: object) -> object:
    """``device_map`` checked up front: a device (string, index, ``torch.device``), a planned map name or a dict."""
    if device_map is None or isinstance(device_map, (int, torch.device, dict)):
        return device_map
    if isinstance(device_map, str):
        if device_map in PLANNED_DEVICE_MAPS:
            return device_map
        try:
            torch.device(device_map)
        except RuntimeError:
            raise ValueError(
                f"device_map={device_map!r} is neither a device ('cpu', 'cuda:0', ...) nor one of "
                f"{', '.join(map(repr, PLANNED_DEVICE_MAPS))}"
            ) from None
        return device_map
    raise TypeError(
        f"device_map must be a device, a device map dict or a map name, not {type(device_map).__name__}"
    )


def load_dit(
    checkpoint_dir: str | os.PathLike[str] | WanCheckpoint,
    model_class: type | None = None,
    *,
    subfolder: str | None = None,
    torch_dtype: torch.dtype | str | None = None,
    device_map: object = None,
    device: str | torch.device | None = None,
    **config_overrides: Any,
) -> torch.nn.Module:
    """``WanModel.from_pretrained(checkpoint_dir, subfolder=..., torch_dtype=..., device_map=...)``.

    As diffusers' ``from_pretrained`` does for Wan's ``WanModel``: float32 unless ``torch_dtype`` is
    given, placed by ``device_map``. The model is built on the meta device from ``config.json`` and
    each tensor is read straight at its target dtype (the class's ``_keep_in_fp32_modules`` at
    float32), so host memory never holds two copies.

    Args:
        checkpoint_dir: the Wan ``ckpt_dir`` (or what :func:`wan_checkpoint` returned).
        model_class: default Wan's ``wan.modules.model.WanModel``; diffusers' ``WanTransformer3DModel``
            for ``-Diffusers`` repos, or Wan's ``WanModel_S2V`` / ``WanAnimateModel``.
        subfolder: ``None`` (root), ``"low_noise_model"`` or ``"high_noise_model"``.
        torch_dtype: the dtype of the weights in memory (default float32, as Wan's call sites get).
        device_map: a device (``"cuda:0"``, ``0``, ``torch.device``), ``"auto"``/``"balanced"``/
            ``"sequential"`` or a module -> device dict.
        device: the same as a single-device ``device_map`` (give one of the two).
        config_overrides: passed to ``model_class.from_config`` (``model_class.__init__``'s parameters only).

    Returns:
        The model in eval mode.

    Raises:
        TypeError: a keyword that is neither an option here nor a config field of ``model_class``.
        ValueError: ``device_map`` names no device and no planned map.
        TypeError: both ``device`` and ``device_map``.

    Example:
        >>> low = load_dit("./Wan2.2-T2V-A14B", subfolder="low_noise_model")  # doctest: +SKIP
    """
    if device is not None:
        if device_map is not None:
            raise TypeError("load_dit() got both device= and device_map=; pass one")
        device_map = device
    device_map = _device_map(device_map)
    if model_class is None:
        model_class = _wan("wan.modules.model").WanModel
    accepted = inspect.signature(model_class.__init__).parameters  # type: ignore[misc]
    unknown = sorted(k for k in config_overrides if k not in accepted or k == "self")
    if unknown:
        raise TypeError(
            f"load_dit() got arguments that are neither its options nor {model_class.__name__} config "
            f"fields: {unknown}"
        )
    parts = checkpoint_dir if isinstance(checkpoint_dir, WanCheckpoint) else wan_checkpoint(checkpoint_dir)
    ckpt = parts.dit_checkpoint(subfolder)
    return load_diffusers_model(
        ckpt,
        component="transformer",
        classes=set(),
        accept=lambda name: True,
        what="DiT",
        subfolder=None,
        variant=None,
        variant_fallback="warn",
        torch_dtype=torch_dtype,
        dtype=None,
        device_map=device_map,
        hub={},
        config_overrides=config_overrides,
        model_class=model_class,
    )


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


def _vae_module(version: str, package: str = "wan") -> Any:
    """The module of a VAE version: ``<package>.modules.vae2_1`` / ``vae2_2`` (Wan2.2), ``.vae`` (Wan2.1)."""
    if version == "2.2":
        return _wan(f"{package}.modules.vae2_2")
    try:
        return importlib.import_module(f"{package}.modules.vae2_1")
    except ImportError:
        return _wan(f"{package}.modules.vae")


def _video_vae(
    module: Any, pretrained_path: Any, device: Any, cfg: dict[str, Any], kwargs: dict[str, Any]
) -> torch.nn.Module:
    cfg.update(**kwargs)
    with torch.device("meta"):
        model = module.WanVAE_(**cfg)
    state = _read_pth(pretrained_path, "_video_vae")
    if torch.device(device) != torch.device("cpu"):
        state = {k: v.to(device) for k, v in state.items()}
    _assign(model, state, pretrained_path)
    return model


def _video_vae_2_1_in(module: Any) -> Callable[..., torch.nn.Module]:
    def _video_vae_2_1(
        pretrained_path: str | os.PathLike[str] | None = None,
        z_dim: int | None = None,
        device: Any = "cpu",
        **kwargs: Any,
    ) -> torch.nn.Module:
        cfg = {
            "dim": 96,
            "z_dim": z_dim,
            "dim_mult": [1, 2, 4, 4],
            "num_res_blocks": 2,
            "attn_scales": [],
            "temperal_downsample": [False, True, True],
            "dropout": 0.0,
        }
        return _video_vae(module, pretrained_path, device, cfg, kwargs)

    return _video_vae_2_1


def _video_vae_2_2_in(module: Any) -> Callable[..., torch.nn.Module]:
    def _video_vae_2_2(
        pretrained_path: str | os.PathLike[str] | None = None,
        z_dim: int = 16,
        dim: int = 160,
        device: Any = "cpu",
        **kwargs: Any,
    ) -> torch.nn.Module:
        cfg = {
            "dim": dim,
            "z_dim": z_dim,
            "dim_mult": [1, 2, 4, 4],
            "num_res_blocks": 2,
            "attn_scales": [],
            "temperal_downsample": [True, True, True],
            "dropout": 0.0,
        }
        return _video_vae(module, pretrained_path, device, cfg, kwargs)

    return _video_vae_2_2


def video_vae_2_1(
    pretrained_path: str | os.PathLike[str] | None = None,
    z_dim: int | None = None,
    device: Any = "cpu",
    **kwargs: Any,
) -> torch.nn.Module:
    """Wan's ``wan.modules.vae2_1._video_vae``: the 2.1 VAE built on meta, filled (``assign``) from the ``.pth``."""
    return _video_vae_2_1_in(_vae_module("2.1"))(pretrained_path, z_dim, device, **kwargs)


def video_vae_2_2(
    pretrained_path: str | os.PathLike[str] | None = None,
    z_dim: int = 16,
    dim: int = 160,
    device: Any = "cpu",
    **kwargs: Any,
) -> torch.nn.Module:
    """Wan's ``wan.modules.vae2_2._video_vae``: the 2.2 VAE built on meta, filled (``assign``) from the ``.pth``."""
    return _video_vae_2_2_in(_vae_module("2.2"))(pretrained_path, z_dim, dim, device, **kwargs)


def Wan2_1_VAE(*args: Any, **kwargs: Any) -> Any:
    """Wan's ``Wan2_1_VAE(z_dim=16, vae_pth=..., dtype=..., device=...)`` (Wan2.1's ``WanVAE``), read by ckptkit."""
    module = _vae_module("2.1")
    cls = getattr(module, "Wan2_1_VAE", None) or module.WanVAE
    with temporarily(module, "_video_vae", _video_vae_2_1_in(module)):
        return cls(*args, **kwargs)


def Wan2_2_VAE(*args: Any, **kwargs: Any) -> Any:
    """Wan's ``Wan2_2_VAE(z_dim=48, c_dim=160, vae_pth=..., ...)``, its weights read by ckptkit."""
    module = _vae_module("2.2")
    with temporarily(module, "_video_vae", _video_vae_2_2_in(module)):
        return module.Wan2_2_VAE(*args, **kwargs)


#: Wan2.1's name for the 2.1 VAE (``wan.modules.vae.WanVAE`` there; ``Wan2_1_VAE`` in Wan2.2).
WanVAE = Wan2_1_VAE


# --- install(): Wan's own generate.py on ckptkit ----------------------------------------------------

_PATCHES = Patches("wan")
#: What ``WanModel.from_pretrained`` takes from Wan's call sites (anything else raises ``TypeError``).
_DIT_KWARGS = ("subfolder", "torch_dtype", "device_map")


def _dit_from_pretrained(cls: type, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
    unsupported = sorted(set(kwargs) - set(_DIT_KWARGS))
    if args or unsupported:
        raise TypeError(
            f"{cls.__name__}.from_pretrained (ckptkit) got unsupported arguments: "
            f"{[*map(repr, args), *unsupported]}"
        )
    return load_dit(pretrained_model_name_or_path, cls, **kwargs)


def _targets(package: str) -> list[tuple[Any, str, Any]]:
    model, t5 = _wan(f"{package}.modules.model"), _wan(f"{package}.modules.t5")
    vae2_1 = _vae_module("2.1", package)
    targets = [
        (model.WanModel, "from_pretrained", classmethod(_dit_from_pretrained)),
        (t5.T5EncoderModel, "__init__", _t5_init),
        (vae2_1, "_video_vae", _video_vae_2_1_in(vae2_1)),
    ]
    # Wan2.2 only: its 2.2 VAE, and the DiT classes that are not WanModel subclasses (S2V, Animate)
    for module_name, attr in [
        ("modules.vae2_2", "_video_vae"),
        ("modules.s2v.model_s2v", "WanModel_S2V"),
        ("modules.animate.model_animate", "WanAnimateModel"),
    ]:
        try:
            module = importlib.import_module(f"{package}.{module_name}")
        except ImportError:
            continue
        if attr == "_video_vae":
            targets.append((module, attr, _video_vae_2_2_in(module)))
        else:
            targets.append((getattr(module, attr), "from_pretrained", classmethod(_dit_from_pretrained)))
    return targets


def install(package: str = "wan") -> None:
    """Make the installed Wan load through ckptkit, its own code (``generate.py``, ``wan.WanT2V``...) unchanged.

    Patches ``from_pretrained`` of ``WanModel``, ``WanModel_S2V`` and ``WanAnimateModel``,
    ``T5EncoderModel.__init__`` and ``_video_vae`` of ``modules.vae2_1`` / ``vae2_2`` (what
    ``Wan2_1_VAE`` / ``Wan2_2_VAE`` call; Wan2.1's ``modules.vae`` for its ``WanVAE``). Installing
    while installed is a no-op; :func:`uninstall` restores them.

    Args:
        package: the Wan package to patch: ``"wan"``, or a vendored copy such as Live Avatar's
            ``"liveavatar.models.wan.wan_2_2"``.

    Raises:
        ImportError: that package is not installed.
    """
    _PATCHES.install(lambda: _targets(package))


def uninstall() -> None:
    """Put Wan's own loaders back (a no-op when :func:`install` was not called)."""
    _PATCHES.uninstall()


@contextmanager
def installed(package: str = "wan") -> Iterator[None]:
    """:func:`install` for the ``with`` block, :func:`uninstall` after it (even on error)."""
    was = _PATCHES.installed
    install(package)
    try:
        yield
    finally:
        if not was:
            uninstall()
