"""The progress bar of loads: tqdm, silenced like huggingface_hub's by ``HF_HUB_DISABLE_PROGRESS_BARS``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["progress_bar", "progress_enabled"]

_TRUE = {"1", "true", "yes", "on"}


def progress_enabled(progress: bool | None) -> bool:
    """``progress`` when given, else whether ``HF_HUB_DISABLE_PROGRESS_BARS`` leaves bars on."""
    if progress is not None:
        return bool(progress)
    return os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().lower() not in _TRUE


@contextmanager
def progress_bar(progress: bool | None, *, total: int, desc: str, unit: str = "B") -> Iterator[Any]:
    """A tqdm bar counting ``total`` units, or ``None`` when bars are off.

    Example:
        >>> with progress_bar(False, total=10, desc="x") as bar:
        ...     bar is None
        True
    """
    if not progress_enabled(progress) or total <= 0:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, unit_divisor=1024 if unit == "B" else 1000)
    try:
        yield bar
    finally:
        bar.close()
