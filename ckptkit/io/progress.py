"""Progress bars: tqdm, with one default for every verb (load, resave, materialize, verify, manifests)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["progress_bar", "progress_enabled"]

_TRUE = {"1", "true", "yes", "on"}


def progress_enabled(progress: bool | None) -> bool:
    """Whether to show a bar: ``progress`` when given; for ``None``, when stderr is a terminal and
    huggingface_hub's switch (``HF_HUB_DISABLE_PROGRESS_BARS``, ``disable_progress_bars()``) leaves
    bars on. Every ckptkit verb takes ``progress=None`` to mean this.
    """
    if progress is not None:
        return bool(progress)
    if os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS", "").strip().lower() in _TRUE:
        return False
    hub = sys.modules.get("huggingface_hub.utils")  # its switch, only if it is loaded anyway
    if hub is not None and hub.are_progress_bars_disabled():
        return False
    return sys.stderr.isatty()


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
