"""The errors and warnings ckptkit raises on purpose.

Every error names the file it is about and, where there is one, the fix. Each class also
inherits the builtin exception that code written before ckptkit already catches
(``FileNotFoundError``, ``OSError``, ``ValueError``).
"""

from __future__ import annotations

import os

__all__ = [
    "AmbiguousCheckpointError",
    "CheckpointNotFoundError",
    "CkptError",
    "CkptWarning",
    "CorruptCheckpointError",
    "DestinationExistsError",
    "DiskFullError",
    "HubUnreachableError",
    "IncompleteCheckpointError",
    "ModelMismatchError",
    "UnsafeCheckpointError",
    "VariantNotFoundError",
]


class CkptError(Exception):
    """Base of every error ckptkit raises on purpose.

    Args:
        message: what is wrong.
        path: the file or directory it is about; it leads the message.
        fix: what the user can do about it; it ends the message.

    Example:
        >>> str(CkptError("header is truncated", path="a.safetensors", fix="download it again"))
        'a.safetensors: header is truncated. Fix: download it again'
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | os.PathLike[str] | None = None,
        fix: str | None = None,
    ) -> None:
        self.detail = message
        self.path = os.fspath(path) if path is not None else None
        self.fix = fix
        text = f"{self.path}: {message}" if self.path else message
        if fix:
            text = f"{text.rstrip('.')}. Fix: {fix}"
        super().__init__(text)

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __reduce__(self):  # keep errors picklable across processes despite keyword-only args
        return (_rebuild_error, (type(self), self.detail, self.path, self.fix))


def _rebuild_error(cls: type[CkptError], detail: str, path: str | None, fix: str | None) -> CkptError:
    return cls(detail, path=path, fix=fix)


class CheckpointNotFoundError(CkptError, FileNotFoundError):
    """Nothing was found; the message says every place that was looked at."""


class HubUnreachableError(CheckpointNotFoundError):
    """Not in any hub cache, and the Hub could not be asked (network, endpoint, or offline mode)."""


class IncompleteCheckpointError(CkptError, OSError):
    """An index names a file that is absent, a link dangles, or a download is unfinished."""


class CorruptCheckpointError(CkptError, ValueError):
    """Header, index, offsets or sizes are inconsistent, or a file is truncated."""


class VariantNotFoundError(CkptError, FileNotFoundError):
    """The requested variant is missing under policy ``"error"``, or the choice is ambiguous."""


class ModelMismatchError(CorruptCheckpointError):
    """The checkpoint's keys or shapes do not fit the model (a wrong config, or another model's weights)."""


class UnsafeCheckpointError(CkptError, ValueError):
    """A path escapes the checkpoint, or a pickle needs more than ``weights_only`` allows."""


class AmbiguousCheckpointError(CkptError, ValueError):
    """Several unrelated weight sets fit the request and nothing says which one is meant."""


class CkptWarning(UserWarning):
    """Something the user should fix, though ckptkit could carry on."""


class DestinationExistsError(CkptError, FileExistsError):
    """The output path already exists and ``overwrite=True`` was not given."""


class DiskFullError(CkptError, OSError):
    """Writing an output ran out of room (no space left, file-size limit, or quota exceeded).

    Nothing is left half-written: the staging files are removed and an existing output is intact.
    """
