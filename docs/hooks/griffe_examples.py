"""griffe extension: read ckptkit's ``Example:`` docstring sections as examples (rendered as code).

griffe's Google parser knows only the plural ``Examples:``; the singular is read as an admonition
whose ``>>>`` lines would be rendered as Markdown text.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", flags=re.MULTILINE)


class ExampleSections(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
