"""griffe extension: make ckptkit's docstrings render well in Markdown.

- ``Example:`` sections are read as examples (rendered as code): griffe's Google parser knows
  only the plural ``Examples:`` and would render the ``>>>`` lines as Markdown text.
- Sphinx roles (``:class:`CheckpointDir```, ``:func:`~ckptkit.resolve_ckpt_dir```) become inline
  code, which Markdown has no other way to show.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", flags=re.MULTILINE)
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`~?([^`]+)`")


class DocstringMarkdown(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _ROLE.sub(r"`\1`", text)
