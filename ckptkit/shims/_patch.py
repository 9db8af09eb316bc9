"""Patch an installed upstream package's loader functions in place, and put them back.

Each shim module's ``install()`` lists ``(owner, name, replacement)`` triples; :class:`Patches`
records what was there (the raw ``__dict__`` entry, so a ``classmethod`` or ``staticmethod`` comes
back as itself; an inherited method is patched on the class and deleted again) and ``uninstall()``
restores exactly that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["Patches", "temporarily"]

_LOCK = threading.RLock()
_ABSENT = object()


def _swap(owner: Any, name: str, value: Any) -> Any:
    """Set ``owner.name`` (``_ABSENT`` deletes it); return the raw entry it replaced."""
    original = vars(owner).get(name, _ABSENT)
    if value is _ABSENT:
        delattr(owner, name)
    else:
        setattr(owner, name, value)
    return original


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
                self._saved.append((owner, name, _swap(owner, name, replacement)))

    def uninstall(self) -> None:
        with _LOCK:
            while self._saved:
                owner, name, original = self._saved.pop()
                _swap(owner, name, original)


@contextmanager
def temporarily(owner: Any, name: str, replacement: Any) -> Iterator[None]:
    """``owner.name = replacement`` for the ``with`` block (serialised: other threads wait)."""
    with _LOCK:
        original = _swap(owner, name, replacement)
        try:
            yield
        finally:
            _swap(owner, name, original)
