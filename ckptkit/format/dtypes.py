"""The dtype table: safetensors codes, torch names and sizes, without importing torch."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DTYPES", "DtypeInfo", "canonical_dtype", "dtype_from_code", "dtype_name_of", "variant_dtype"]


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


def dtype_from_code(code: str) -> DtypeInfo | None:
    """The :class:`DtypeInfo` of a safetensors code, or ``None`` for an unknown code."""
    return DTYPES.get(code)


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


def dtype_name_of(code: str) -> str:
    """The torch attribute name of a safetensors code (``"BF16"`` -> ``"bfloat16"``)."""
    return DTYPES[code].name


def variant_dtype(variant: str | None) -> str | None:
    """The dtype a variant name promises (``"fp16"`` -> ``"float16"``), or ``None``."""
    if variant is None:
        return None
    return {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}.get(variant.lower())
