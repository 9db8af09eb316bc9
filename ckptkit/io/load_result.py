"""``LoadResult``: what loading into a module did — the keys, as torch's result has them, and what
was filled (tensors, bytes, dtypes, time), shown as one line, a few lines, or a Jupyter table."""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from ckptkit.format.display import dtype_text, html_table, plural, summary_line, text_table
from ckptkit.format.sizes import format_size

__all__ = ["LoadResult"]


class _Keys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


class LoadResult(_Keys):
    """What loading into a module did, like ``nn.Module.load_state_dict``'s result.

    It unpacks as ``missing_keys, unexpected_keys`` (as torch's result does) and also says what
    was loaded: ``repr()`` is one line, ``str()`` a few, and Jupyter shows a table.

    Attributes:
        missing_keys: module keys the checkpoint did not fill (tied aliases of a filled key are
            not missing).
        unexpected_keys: selected checkpoint keys the module has no place for.
        path: the checkpoint directory loaded from (``None`` when not recorded).
        tensors: module tensors filled.
        bytes: their bytes in memory, after any cast.
        bytes_by_dtype: those bytes per dtype name (``"bfloat16"``).
        seconds: wall time of the load, resolving included.
    """

    path: str | None
    tensors: int
    bytes: int
    bytes_by_dtype: dict[str, int]
    seconds: float | None

    def __new__(cls, missing_keys: list[str], unexpected_keys: list[str]) -> LoadResult:
        self = super().__new__(cls, missing_keys, unexpected_keys)
        self.path, self.tensors, self.bytes, self.bytes_by_dtype, self.seconds = None, 0, 0, {}, None
        return self

    def __repr__(self) -> str:
        if self.path is None:
            return f"LoadResult(missing_keys={self.missing_keys!r}, unexpected_keys={self.unexpected_keys!r})"
        return summary_line("LoadResult", self.path, self._parts())

    def __str__(self) -> str:
        return text_table(f"LoadResult {self.path or ''}".rstrip(), self._rows())

    def _repr_html_(self) -> str:
        return html_table(f"LoadResult {self.path or ''}".rstrip(), self._rows())

    def _parts(self) -> list[str]:
        return [
            plural(self.tensors, "tensor"),
            format_size(self.bytes),
            dtype_text(self.bytes_by_dtype),
            f"{self.seconds:.2f} s" if self.seconds is not None else "",
            f"{len(self.missing_keys)} missing" if self.missing_keys else "",
            f"{len(self.unexpected_keys)} unexpected" if self.unexpected_keys else "",
        ]

    def _rows(self) -> list[tuple[str, object]]:
        return [
            ("tensors", self.tensors),
            ("bytes", format_size(self.bytes)),
            ("dtypes", dtype_text(self.bytes_by_dtype)),
            ("time", f"{self.seconds:.2f} s" if self.seconds is not None else None),
            ("missing keys", self.missing_keys or "none"),
            ("unexpected keys", self.unexpected_keys or "none"),
        ]

    def record(self, path: object, model: nn.Module, seconds: float) -> LoadResult:
        """Fill in what was loaded, from the module's filled tensors (no data is read)."""
        missing = set(self.missing_keys)
        by_dtype: dict[str, int] = {}
        count = 0
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name in missing or tensor.is_meta:
                continue
            count += 1
            key = str(tensor.dtype).removeprefix("torch.")
            by_dtype[key] = by_dtype.get(key, 0) + tensor.numel() * tensor.element_size()
        self.path, self.seconds, self.tensors = str(path), seconds, count
        self.bytes_by_dtype = dict(sorted(by_dtype.items()))
        self.bytes = sum(by_dtype.values())
        return self
