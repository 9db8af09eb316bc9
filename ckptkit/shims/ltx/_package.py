"""The installed LTX-Video package: its model classes and config tables, looked up by name."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["ltx"]


def ltx(name: str) -> Any:
    """An attribute of the installed LTX-Video package (its model classes and config mappings).

    Raises:
        ImportError: LTX-Video is not installed (the message says how to install it).
    """
    module_name, _, attr = name.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(
            f"{name} comes from LTX-Video ({exc}); install it (`pip install ltx-video`) or pass model_class="
        ) from None
    return getattr(module, attr)
