"""Pausing Python's cyclic garbage collector while a load builds many small objects.

A load makes a few objects per tensor (header entries, views) and none of them form cycles. After
importing torch and a model library the heap holds hundreds of thousands of objects, and the
collector, triggered by these allocations, scans all of them again and again: two thirds of the time
to map a 5,000-tensor file into a dict went to it. Pausing it for the call, as ``pickle``-heavy
loaders do, removes that; it is restored (only if it was on) when the call ends, however it ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["gc_paused"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block; re-enable it after, if it was enabled.

    Example:
        >>> with gc_paused():
        ...     items = [object() for _ in range(10)]
        >>> gc.isenabled()
        True
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
