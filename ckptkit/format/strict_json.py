"""JSON parsing that refuses duplicate keys, which ``json`` would silently merge."""

from __future__ import annotations

import gc
import json

__all__ = ["DuplicateKeyError", "loads_strict"]


class DuplicateKeyError(ValueError):
    """A JSON object names the same key twice; ``.key`` is that key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key!r}")
        self.key = key


def _pairs_without_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)  # in C; only a repeated key makes it shorter, then find which
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key)
            seen.add(key)
    return result


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON (only Python writes it)")


# Made once, as ``json.loads`` keeps its default decoder (a decoder holds no state between calls).
_DECODER = json.JSONDecoder(object_pairs_hook=_pairs_without_duplicates)
_DECODER_NO_CONSTANTS = json.JSONDecoder(
    object_pairs_hook=_pairs_without_duplicates, parse_constant=_no_constant
)


def loads_strict(raw: bytes | str, *, constants: bool = True) -> object:
    """``json.loads`` that raises :class:`DuplicateKeyError` on a repeated key.

    Args:
        raw: the JSON text.
        constants: accept ``NaN``/``Infinity`` as Python's ``json`` does; ``False`` refuses them,
            as strict parsers (safetensors' serde_json) do.

    Raises:
        DuplicateKeyError: a key is repeated in an object.
        ValueError: not UTF-8 or not JSON (``UnicodeDecodeError`` and ``JSONDecodeError`` are both).
        RecursionError: nesting too deep.
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    # JSON makes no reference cycles; the cyclic collector, triggered again and again while
    # millions of objects are allocated (a 2M-key index), would cost more than the parsing.
    enabled = gc.isenabled()
    gc.disable()
    try:
        if not isinstance(text, str):  # a bytearray: json.loads detects its encoding
            return json.loads(
                text,
                object_pairs_hook=_pairs_without_duplicates,
                **({} if constants else {"parse_constant": _no_constant}),
            )
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return (_DECODER if constants else _DECODER_NO_CONSTANTS).decode(text)
    finally:
        if enabled:
            gc.enable()
