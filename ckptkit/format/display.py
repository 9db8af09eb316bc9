"""How results show themselves: one summary line for ``repr``/``str``, an HTML table for Jupyter.

Every result object (``CheckpointDir``, ``CheckpointInfo``, ``VerifyReport``, ``MemoryPlan``,
``LoadResult``) describes itself as a title and a list of ``(label, value)`` rows; this module turns
those into the terminal summary and the notebook table, so all of them read the same way.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence

from ckptkit.format.sizes import format_size

__all__ = ["dtype_text", "html_table", "plural", "summary_line", "text_table"]

Row = tuple[str, object]


def plural(count: int, word: str) -> str:
    """``"1 file"``, ``"3 files"``.

    Example:
        >>> plural(1, "file"), plural(3, "shard")
        ('1 file', '3 shards')
    """
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def dtype_text(bytes_by_dtype: Mapping[str, int]) -> str:
    """``"BF16 1.2 GiB, F32 3.0 KiB"``, largest first.

    Example:
        >>> dtype_text({"F32": 4096, "BF16": 2048})
        'F32 4.0 KiB, BF16 2.0 KiB'
    """
    ordered = sorted(bytes_by_dtype.items(), key=lambda item: -item[1])
    return ", ".join(f"{code} {format_size(n)}" for code, n in ordered) or "-"


def summary_line(kind: str, subject: object, parts: Iterable[str]) -> str:
    """``"<Kind subject: part, part>"``, the ``repr`` of every result object.

    Example:
        >>> summary_line("CheckpointDir", "/m/vae", ["safetensors", "1 file"])
        "<CheckpointDir '/m/vae': safetensors, 1 file>"
    """
    text = ", ".join(p for p in parts if p)
    return f"<{kind} {str(subject)!r}{': ' + text if text else ''}>"


def text_table(title: str, rows: Sequence[Row]) -> str:
    """The rows as aligned ``label  value`` lines under a title (the ``str`` of a result).

    Example:
        >>> print(text_table("vae", [("format", "safetensors"), ("files", 1)]))
        vae
          format  safetensors
          files   1
    """
    width = max((len(label) for label, _ in rows), default=0)
    lines = [title]
    for label, value in rows:
        if isinstance(value, list) and len(value) > 1:
            lines.append(f"  {label:<{width}}  {_text(value[0])}")
            lines += [f"  {'':<{width}}  {_text(item)}" for item in value[1:]]
        else:
            lines.append(f"  {label:<{width}}  {_text(value)}")
    return "\n".join(lines)


def html_table(title: str, rows: Sequence[Row], *, columns: Sequence[str] | None = None) -> str:
    """An HTML table for Jupyter's ``_repr_html_``: a caption, then one row per label.

    A value that is a list of tuples becomes a nested table with ``columns`` as its header.

    Example:
        >>> html_table("vae", [("files", 1)]).startswith("<table")
        True
    """
    body = []
    for label, value in rows:
        if isinstance(value, list) and value and isinstance(value[0], tuple):
            cell = _nested(value, columns)
        else:
            cell = html.escape(_text(value))
        body.append(
            f"<tr><th style='text-align:left'>{html.escape(label)}</th><td style='text-align:left'>{cell}</td></tr>"
        )
    return (
        "<table class='ckptkit'>"
        f"<caption style='text-align:left'><b>{html.escape(title)}</b></caption>" + "".join(body) + "</table>"
    )


def _nested(rows: list[tuple[object, ...]], columns: Sequence[str] | None) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns) if columns else ""
    cells = "".join(
        "<tr>" + "".join(f"<td style='text-align:left'>{html.escape(_text(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    return f"<table>{'<tr>' + head + '</tr>' if head else ''}{cells}</table>"


def _text(value: object) -> str:
    if isinstance(value, list):
        return "; ".join(_text(v) for v in value) if value else "-"
    if isinstance(value, tuple):
        return " ".join(_text(v) for v in value)
    if value is None:
        return "-"
    return str(value)
