"""The public face: what docs/reference/api.md documents is importable where it says.

The API tiers (docs/reference/tiers.md): ``ckptkit.__all__``, ``ckptkit.adapters``,
``ckptkit.shims.*`` and ``ckptkit.distributed`` are public; every other module is internal.
"""

from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path

import pytest

import ckptkit

API = Path(__file__).resolve().parent.parent / "docs" / "reference" / "api.md"


def documented() -> list[tuple[str, str]]:
    """(public home, name) of every ``:::`` entry: the section's subpackage when its heading names
    one (``## Adapters (`ckptkit.adapters`)``), the shim module for shims, else ``ckptkit``."""
    entries = []
    home = "ckptkit"
    for line in API.read_text().splitlines():
        heading = re.match(r"##\s+.*\(`(ckptkit\.[a-z_.]+)`\)", line)
        if line.startswith("## "):
            home = heading.group(1) if heading else "ckptkit"
        entry = re.match(r":::\s+(\S+)", line)
        if entry:
            module, _, name = entry.group(1).rpartition(".")
            entries.append((module if home == "ckptkit.shims" else home, name))
    return entries


def test_the_reference_documents_the_public_names():
    names = {name for _, name in documented()}
    assert {"load_sharded_distributed", "find_blocks", "read_manifest", "load_dit"} <= names


@pytest.mark.parametrize(("home", "name"), documented())
def test_every_documented_name_is_importable_from_its_public_home(home, name):
    module = importlib.import_module(home)
    assert getattr(module, name) is not None
    if home == "ckptkit":
        assert name in ckptkit.__all__


def test_the_issue_s_three_imports():
    from ckptkit import find_blocks, load_sharded_distributed, read_manifest

    assert callable(find_blocks) and callable(load_sharded_distributed) and callable(read_manifest)


def test_trimmed_format_names_still_import_with_a_deprecation_warning():
    import ckptkit.format as fmt

    assert "parse_size" not in fmt.__all__
    with pytest.warns(DeprecationWarning, match=r"ckptkit.format.parse_size is deprecated"):
        from ckptkit.format import parse_size
    assert parse_size("1KiB") == 1024
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from ckptkit.format import read_header  # still public: no warning

        assert callable(read_header)
