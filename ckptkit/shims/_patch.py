"""Patch an installed upstream package's loader functions in place, and put them back.

Each shim module's ``install()`` lists ``(owner, name, replacement)`` triples; :class:`Patches`
records what was there (the raw ``__dict__`` entry, so a ``classmethod`` or ``staticmethod`` comes
back as itself) and ``uninstall()`` restores exactly that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Patches", "temporarily"]

_LOCK = threading.RLock()


class Patches:
    """The patches one shim module installs (installing twice is a no-op)."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._saved: list[tuple[Any, str, Any]] = []

    @property
    def installed(self) -> bool:
        return bool(self._saved)

    def install(self, targets: Callable[[], list[tuple[Any, str, Any]]]) -> None:
        with _LOCK:
            if self._saved:
                return
            for owner, name, replacement in targets():
                self._saved.append((owner, name, vars(owner)[name]))
                setattr(owner, name, replacement)

    def uninstall(self) -> None:
        with _LOCK:
            while self._saved:
                owner, name, original = self._saved.pop()
                setattr(owner, name, original)


@contextmanager
def temporarily(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    """``owner.name = replacement`` for the ``with`` block (serialised: other threads wait)."""
    with _LOCK:
        original = vars(owner)[name]
        setattr(owner, name, replacement)
        try:
            yield
        finally:
            setattr(owner, name, original)
