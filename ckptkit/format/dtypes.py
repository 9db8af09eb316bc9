"""The dtype table: safetensors codes, torch names and sizes, without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DTYPES", "DtypeInfo", "canonical_dtype", "nbytes_of", "torch_itemsize", "variant_dtype"]


@dataclass(frozen=True)
class DtypeInfo:
    """One element type as safetensors stores it.

    Attributes:
        code: the safetensors code (``"BF16"``).
        name: the torch attribute name (``"bfloat16"``), so ``getattr(torch, name)`` gives it.
        bits: bits per element (sub-byte types have fewer than 8).
        floating: whether it is a floating-point type (what ``dtype=`` casts apply to).
    """

    code: str
    name: str
    bits: int
    floating: bool

    def nbytes(self, numel: int) -> int | None:
        """Bytes that ``numel`` elements take, or ``None`` when they do not fill whole bytes."""
        total_bits = numel * self.bits
        return total_bits // 8 if total_bits % 8 == 0 else None


_TABLE = [
    DtypeInfo("F64", "float64", 64, True),
    DtypeInfo("F32", "float32", 32, True),
    DtypeInfo("F16", "float16", 16, True),
    DtypeInfo("BF16", "bfloat16", 16, True),
    DtypeInfo("F8_E4M3", "float8_e4m3fn", 8, True),
    DtypeInfo("F8_E4M3FNUZ", "float8_e4m3fnuz", 8, True),
    DtypeInfo("F8_E5M2", "float8_e5m2", 8, True),
    DtypeInfo("F8_E5M2FNUZ", "float8_e5m2fnuz", 8, True),
    DtypeInfo("F8_E8M0", "float8_e8m0fnu", 8, True),
    DtypeInfo("F6_E2M3", "float6_e2m3fn", 6, True),
    DtypeInfo("F6_E3M2", "float6_e3m2fn", 6, True),
    DtypeInfo("F4", "float4_e2m1fn_x2", 4, True),
    DtypeInfo("C64", "complex64", 64, False),
    DtypeInfo("I64", "int64", 64, False),
    DtypeInfo("I32", "int32", 32, False),
    DtypeInfo("I16", "int16", 16, False),
    DtypeInfo("I8", "int8", 8, False),
    DtypeInfo("U64", "uint64", 64, False),
    DtypeInfo("U32", "uint32", 32, False),
    DtypeInfo("U16", "uint16", 16, False),
    DtypeInfo("U8", "uint8", 8, False),
    DtypeInfo("BOOL", "bool", 8, False),
]

#: safetensors code -> :class:`DtypeInfo`
DTYPES: dict[str, DtypeInfo] = {d.code: d for d in _TABLE}
_BY_NAME = {d.name: d for d in _TABLE}

# What users type for ``dtype=``: torch names plus the usual short forms.
_ALIASES = {
    "fp16": "float16",
    "half": "float16",
    "f16": "float16",
    "bf16": "bfloat16",
    "fp32": "float32",
    "float": "float32",
    "f32": "float32",
    "fp64": "float64",
    "double": "float64",
    "fp8_e4m3fn": "float8_e4m3fn",
    "fp8_e4m3": "float8_e4m3fn",
    "fp8_e5m2": "float8_e5m2",
}


def _info(dtype: str) -> DtypeInfo | None:
    return DTYPES.get(dtype) or _BY_NAME.get(dtype.removeprefix("torch."))


def nbytes_of(numel: int, dtype: str) -> int:
    """Bytes that ``numel`` values of ``dtype`` take in a safetensors file: sub-byte values are
    packed (F4: two per byte) and the total rounded up to a whole byte. The one answer to "how big
    is this tensor" that inspect, plan_memory and plan_device_map share.

    Args:
        numel: the number of values (the product of a safetensors header's shape).
        dtype: a safetensors code (``"F4"``, ``"BF16"``) or a torch dtype name (``"bfloat16"``);
            an unknown one counts 4 bytes per value.

    Example:
        >>> nbytes_of(10, "F4"), nbytes_of(10, "bfloat16"), nbytes_of(3, "F4")
        (5, 20, 2)
    """
    info = _info(dtype)
    bits = info.bits if info is not None else 32
    return (numel * bits + 7) // 8


def torch_itemsize(dtype: str) -> int:
    """Bytes of one element of a torch tensor of ``dtype`` (code or torch name).

    Torch keeps sub-byte values packed in whole-byte elements (``float4_e2m1fn_x2``: two F4 values
    per one-byte element), so a torch element is never smaller than a byte; an unknown dtype is 1.

    Example:
        >>> torch_itemsize("F4"), torch_itemsize("bfloat16")
        (1, 2)
    """
    info = _info(dtype)
    return max(info.bits // 8, 1) if info is not None else 1


def canonical_dtype(value: object) -> str:
    """The torch attribute name of a user's ``dtype`` (``"fp16"``, ``"bfloat16"``, ``torch.float16``).

    Raises:
        ValueError: for a name that is no floating dtype torch knows.

    Example:
        >>> canonical_dtype("bf16"), canonical_dtype("float16")
        ('bfloat16', 'float16')
    """
    text = str(value)
    if text.startswith("torch."):
        text = text[len("torch.") :]
    text = _ALIASES.get(text.lower(), text.lower())
    info = _BY_NAME.get(text) or DTYPES.get(text.upper())
    if info is None:
        names = ", ".join(sorted({*_ALIASES, *(d.name for d in _TABLE if d.floating)}))
        raise ValueError(f"unknown dtype {value!r}; use a torch.dtype or one of: {names}")
    return info.name


def variant_dtype(variant: str | None) -> str | None:
    """The dtype a variant name promises (``"fp16"`` -> ``"float16"``), or ``None``."""
    if variant is None:
        return None
    return {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}.get(variant.lower())
