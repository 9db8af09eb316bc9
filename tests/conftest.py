from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every checkpoint layout, written once per session by the real libraries (read-only use)."""
    from tests._models import save_layouts

    return save_layouts(tmp_path_factory.mktemp("layouts"))


@pytest.fixture
def layout_copy(layouts: dict[str, Path], tmp_path: Path):
    """A private copy of one layout, for tests that damage or modify it."""
    import shutil

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(layouts[name], dst, symlinks=True)
        return dst

    return copy
