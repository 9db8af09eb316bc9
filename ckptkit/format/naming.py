"""The one place that knows checkpoint file names.

Weights names of transformers (``model``, ``pytorch_model``) and diffusers
(``diffusion_pytorch_model``), shard numbering ``-00001-of-00003``, and variants in both schemes:

========  =================================================  =================================================
          current (diffusers >= 0.31, transformers)          legacy (diffusers 0.29-0.30)
========  =================================================  =================================================
single    ``diffusion_pytorch_model.fp16.safetensors``       same
shard     ``diffusion_pytorch_model.fp16-00001-of-00002...`` ``diffusion_pytorch_model-00001-of-00002.fp16...``
index     ``...safetensors.index.fp16.json``                 ``...safetensors.fp16.index.json``
========  =================================================  =================================================

Both are read; only the current scheme is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "DIFFUSERS_WEIGHTS_NAME",
    "KNOWN_VARIANTS",
    "KNOWN_WEIGHTS_NAMES",
    "SAFETENSORS_EXTENSIONS",
    "TORCH_EXTENSIONS",
    "TRANSFORMERS_TORCH_NAME",
    "TRANSFORMERS_WEIGHTS_NAME",
    "IndexFileName",
    "WeightFileName",
    "check_output_names",
    "format_of_extension",
    "index_filename",
    "is_weights_name",
    "parse_index_filename",
    "parse_weight_filename",
    "weights_family",
    "weights_filename",
]

TRANSFORMERS_WEIGHTS_NAME = "model"
TRANSFORMERS_TORCH_NAME = "pytorch_model"
DIFFUSERS_WEIGHTS_NAME = "diffusion_pytorch_model"
#: Weights names libraries write; variants are read after them whatever the variant word.
KNOWN_WEIGHTS_NAMES = (
    DIFFUSERS_WEIGHTS_NAME,
    TRANSFORMERS_WEIGHTS_NAME,
    TRANSFORMERS_TORCH_NAME,
    "adapter_model",
    "pytorch_lora_weights",
)
#: Variant words read after any other file name (``Wan2.1_VAE.pth`` has no variant ``1_VAE``).
KNOWN_VARIANTS = ("fp16", "bf16", "fp32", "fp8", "ema", "non_ema", "int8")

SAFETENSORS_EXTENSIONS = ("safetensors",)
TORCH_EXTENSIONS = ("bin", "pt", "pth", "ckpt")
_EXT = "|".join(SAFETENSORS_EXTENSIONS + TORCH_EXTENSIONS)
_SHARD = r"-(?P<index>\d{5})-of-(?P<count>\d{5})"
_TOKEN = r"[A-Za-z0-9_]+"

_SHARD_CURRENT = re.compile(rf"^(?P<stem>.+?)\.(?P<variant>{_TOKEN}){_SHARD}\.(?P<ext>{_EXT})$")
_SHARD_LEGACY = re.compile(rf"^(?P<stem>.+?){_SHARD}\.(?P<variant>{_TOKEN})\.(?P<ext>{_EXT})$")
_SHARD_PLAIN = re.compile(rf"^(?P<stem>.+?){_SHARD}\.(?P<ext>{_EXT})$")
_SINGLE_VARIANT = re.compile(rf"^(?P<stem>.+)\.(?P<variant>{_TOKEN})\.(?P<ext>{_EXT})$")
_SINGLE = re.compile(rf"^(?P<stem>.+)\.(?P<ext>{_EXT})$")
_INDEX_CURRENT = re.compile(rf"^(?P<stem>.+)\.(?P<ext>{_EXT})\.index\.(?P<variant>{_TOKEN})\.json$")
_INDEX_LEGACY = re.compile(rf"^(?P<stem>.+)\.(?P<ext>{_EXT})\.(?P<variant>{_TOKEN})\.index\.json$")
_INDEX_PLAIN = re.compile(rf"^(?P<stem>.+)\.(?P<ext>{_EXT})\.index\.json$")


def format_of_extension(ext: str) -> str:
    """``"safetensors"`` or ``"torch"`` for a file extension without the dot."""
    return "safetensors" if ext in SAFETENSORS_EXTENSIONS else "torch"


def weights_family(stem: str) -> str:
    """Names that hold the same weights in two formats share a family (``model``/``pytorch_model``)."""
    return TRANSFORMERS_WEIGHTS_NAME if stem == TRANSFORMERS_TORCH_NAME else stem


def _variant_allowed(stem: str, variant: str) -> bool:
    return stem in KNOWN_WEIGHTS_NAMES or variant.lower() in KNOWN_VARIANTS


@dataclass(frozen=True)
class WeightFileName:
    """What a weights file name says.

    Attributes:
        stem: the weights name (``"model"``, ``"diffusion_pytorch_model"``, or any other).
        ext: extension without the dot.
        variant: ``"fp16"`` etc., or ``None``.
        shard: ``(index, count)``, 1-based, or ``None`` for a single file.
        scheme: ``"legacy"`` for a legacy-named variant shard, else ``"current"``.
    """

    stem: str
    ext: str
    variant: str | None = None
    shard: tuple[int, int] | None = None
    scheme: str = "current"

    @property
    def format(self) -> str:
        return format_of_extension(self.ext)


@dataclass(frozen=True)
class IndexFileName:
    """What an index file name says (``model.safetensors.index.fp16.json``)."""

    stem: str
    ext: str
    variant: str | None = None
    scheme: str = "current"

    @property
    def format(self) -> str:
        return format_of_extension(self.ext)


def parse_weight_filename(name: str) -> WeightFileName | None:
    """Parse a weights file name; ``None`` when it is no weights file.

    Example:
        >>> parse_weight_filename("diffusion_pytorch_model-00001-of-00002.fp16.safetensors")
        WeightFileName(stem='diffusion_pytorch_model', ext='safetensors', variant='fp16', shard=(1, 2), scheme='legacy')
    """
    for pattern, scheme in ((_SHARD_CURRENT, "current"), (_SHARD_LEGACY, "legacy")):
        match = pattern.match(name)
        if match and _variant_allowed(match["stem"], match["variant"]):
            return WeightFileName(match["stem"], match["ext"], match["variant"], _shard(match), scheme)
    match = _SHARD_PLAIN.match(name)
    if match:
        return WeightFileName(match["stem"], match["ext"], None, _shard(match))
    match = _SINGLE_VARIANT.match(name)
    if match and _variant_allowed(match["stem"], match["variant"]):
        return WeightFileName(match["stem"], match["ext"], match["variant"])
    match = _SINGLE.match(name)
    if match:
        return WeightFileName(match["stem"], match["ext"])
    return None


def _shard(match: re.Match[str]) -> tuple[int, int]:
    return int(match["index"]), int(match["count"])


def parse_index_filename(name: str) -> IndexFileName | None:
    """Parse an index file name; ``None`` when it is no index.

    Example:
        >>> parse_index_filename("model.safetensors.index.fp16.json")
        IndexFileName(stem='model', ext='safetensors', variant='fp16', scheme='current')
    """
    for pattern, scheme in ((_INDEX_CURRENT, "current"), (_INDEX_LEGACY, "legacy")):
        match = pattern.match(name)
        if match:
            return IndexFileName(match["stem"], match["ext"], match["variant"], scheme)
    match = _INDEX_PLAIN.match(name)
    if match:
        return IndexFileName(match["stem"], match["ext"])
    return None


def is_weights_name(name: str) -> bool:
    """Whether a file name is a weights file or a weights index (what a weight set is made of).

    Example:
        >>> is_weights_name("model.safetensors.index.json"), is_weights_name("config.json")
        (True, False)
    """
    return parse_weight_filename(name) is not None or parse_index_filename(name) is not None


def weights_filename(
    stem: str, ext: str = "safetensors", *, variant: str | None = None, shard: tuple[int, int] | None = None
) -> str:
    """A weights file name in the current scheme.

    Example:
        >>> weights_filename("model", variant="fp16", shard=(1, 3))
        'model.fp16-00001-of-00003.safetensors'
    """
    name = stem if variant is None else f"{stem}.{variant}"
    if shard is not None:
        name += f"-{shard[0]:05d}-of-{shard[1]:05d}"
    return f"{name}.{ext}"


def index_filename(stem: str, ext: str = "safetensors", *, variant: str | None = None) -> str:
    """An index file name in the current scheme.

    Example:
        >>> index_filename("diffusion_pytorch_model", variant="fp16")
        'diffusion_pytorch_model.safetensors.index.fp16.json'
    """
    return f"{stem}.{ext}.index.json" if variant is None else f"{stem}.{ext}.index.{variant}.json"


#: Longest weights name written: with a variant and a shard suffix the file name stays far
#: below the 255-byte limit of common file systems.
MAX_WEIGHTS_NAME = 150


def check_output_names(weights_name: str | None, variant: str | None) -> None:
    """Refuse a ``weights_name`` or ``variant`` that would not make plain, readable file names.

    Checked before anything is written: the names written must stay inside the output
    directory and be read back as the same weights name and variant.

    Raises:
        ValueError: naming the argument (quoted, shortened).

    Example:
        >>> check_output_names("model", "fp16")
        >>> check_output_names("../escaped", None)
        Traceback (most recent call last):
        ...
        ValueError: weights_name='../escaped' must be a plain file name stem (no '/', '\\', leading '.', control characters; at most 150 characters)
    """
    if variant is not None and (not isinstance(variant, str) or not re.fullmatch(_TOKEN, variant)):
        raise ValueError(f"variant={str(variant)[:40]!r} must be letters, digits and '_' (like 'fp16')")
    if weights_name is None:
        return
    if (
        not isinstance(weights_name, str)
        or not weights_name
        or weights_name.startswith(".")
        or len(weights_name) > MAX_WEIGHTS_NAME
        or any(c in "/\\" or ord(c) < 32 or 0xD800 <= ord(c) <= 0xDFFF for c in weights_name)
    ):
        raise ValueError(
            f"weights_name={str(weights_name)[:40]!r} must be a plain file name stem (no '/', '\\', leading "
            f"'.', control characters; at most {MAX_WEIGHTS_NAME} characters)"
        )
    for shard in (None, (1, 2)):
        written = weights_filename(weights_name, variant=variant, shard=shard)
        parsed = parse_weight_filename(written)
        if parsed is None or parsed.stem != weights_name or parsed.variant != variant:
            raise ValueError(
                f"weights_name={weights_name[:40]!r} with variant={variant!r} makes {written[:60]!r}, "
                "which would be read back under another name; choose another weights_name"
            )
