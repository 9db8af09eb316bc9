"""Size strings as users write them: ``"10GB"`` (decimal, as huggingface_hub) and ``"10GiB"``."""

from __future__ import annotations

import re

__all__ = ["format_size", "parse_size"]

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
#: Larger than any file or memory (2**63, where 64-bit offsets end).
MAX_SIZE = 2**63
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*$")


def parse_size(size: int | str) -> int:
    """Bytes in a size given as an int or a string.

    ``KB/MB/GB/TB`` are powers of 10 (as huggingface_hub's ``parse_size_to_int``), ``KiB/MiB/GiB/TiB``
    powers of 2. Units are case-insensitive; fractions are allowed (``"1.5GB"``).

    Raises:
        ValueError: for a negative number, an unknown unit or text that is no size.

    Example:
        >>> parse_size("10GB"), parse_size("1GiB"), parse_size(512)
        (10000000000, 1073741824, 512)
    """
    if isinstance(size, bool):
        raise ValueError(f"not a size: {size!r}")
    if isinstance(size, int):
        if size < 0:
            raise ValueError(f"a size cannot be negative: {size}")
        return size
    if not isinstance(size, str):
        raise ValueError(f"a size is an int or a string such as '10GB' or '500MiB', not {size!r}")
    match = _PATTERN.match(size)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError(
            f"not a size: {size!r}; write an int (bytes) or a number with a unit: "
            "KB/MB/GB/TB (10**3 steps) or KiB/MiB/GiB/TiB (2**10 steps)"
        )
    value = float(match.group(1)) * _UNITS[unit]
    if not value < MAX_SIZE:
        raise ValueError(f"not a size: {size[:40]!r} is over {MAX_SIZE} bytes (8 EiB)")
    return int(value)


def format_size(nbytes: int) -> str:
    """A short human form of a byte count (``1536`` -> ``"1.5 KiB"``)."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
