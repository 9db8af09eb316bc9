"""mkdocs hook: replace ``<!-- ckptkit-cli-help -->`` with the ``--help`` of every subcommand.

The CLI reference is generated from the parser itself, so it cannot drift from the code.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

REPO = str(Path(__file__).resolve().parents[2])

MARKER = "<!-- ckptkit-cli-help -->"


def _render() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps to the terminal width; fix it for the page
    if REPO not in sys.path:  # build from this checkout even when ckptkit is not installed
        sys.path.insert(0, REPO)
    from ckptkit.cli import build_parser

    parser = build_parser()
    sections = ["## ckptkit", "", "```text", parser.format_help().rstrip(), "```", ""]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                sections += [f"## ckptkit {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(sections)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, _render())
