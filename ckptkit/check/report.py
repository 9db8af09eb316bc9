"""What :func:`~ckptkit.check.verify.verify_checkpoint` reports: :class:`VerifyReport` and one
:class:`FileCheck` per file, with the one-line ``repr()``, the few-line ``str()`` and the Jupyter
table. Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ckptkit.check.info import Problem
from ckptkit.format.display import html_table, plural, summary_line, text_table
from ckptkit.format.sizes import format_size

__all__ = ["FileCheck", "VerifyReport"]


@dataclass
class FileCheck:
    """The content check of one file.

    Attributes:
        name: the file, relative to the verified directory.
        size: its size in bytes (``None`` when it cannot be read, a dangling link).
        expected: the digests recorded for it, as ``{"algorithm", "hexdigest", "source"}``.
        computed: algorithm -> digest actually computed (empty with ``checksums=False``).
        ok: ``True`` when every recorded digest matched, ``False`` when one did not, ``None``
            when nothing was compared.
    """

    name: str
    size: int | None
    expected: list[dict[str, str]] = field(default_factory=list)
    computed: dict[str, str] = field(default_factory=dict)
    ok: bool | None = None


@dataclass(repr=False)
class VerifyReport:
    """What :func:`verify_checkpoint` found.

    Attributes:
        path: the directory verified.
        root: the checkpoint root links are judged against.
        checksums: whether file contents were hashed.
        problems: everything wrong, one line each naming its file (``severity`` ``"error"`` or
            ``"warning"``).
        files: the content check of each file.
        outside_links: links whose real path lies outside the root (``"link -> real path"``).
        manifests: the ``SHA256SUMS`` files used.
        manifest_written: the manifest written by ``write_manifest=True``, if any.
        bytes_hashed: bytes read to hash.
        seconds: wall time of the whole check.
    """

    path: str
    root: str
    checksums: bool
    problems: list[Problem] = field(default_factory=list)
    files: list[FileCheck] = field(default_factory=list)
    outside_links: list[str] = field(default_factory=list)
    manifests: list[str] = field(default_factory=list)
    manifest_written: str | None = None
    bytes_hashed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """No error (warnings allowed)."""
        return not any(p.severity == "error" for p in self.problems)

    @property
    def verified(self) -> list[str]:
        """Files whose recorded digests all matched."""
        return [f.name for f in self.files if f.ok]

    @property
    def unverified(self) -> list[str]:
        """Files that nothing recorded a digest for (or that were not hashed)."""
        return [f.name for f in self.files if f.ok is None]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; its keys are stable for scripts."""
        result = asdict(self)
        result.update(ok=self.ok, verified=len(self.verified), unverified=len(self.unverified))
        return result

    @property
    def status(self) -> str:
        """``"OK"`` or ``"FAILED (n problems)"``."""
        errors = sum(p.severity == "error" for p in self.problems)
        return "OK" if self.ok else f"FAILED ({plural(errors, 'problem')})"

    def __repr__(self) -> str:
        return summary_line("VerifyReport", self.path, [self.status, *self._content()])

    def __str__(self) -> str:
        return text_table(f"VerifyReport {self.path}: {self.status}", self._rows())

    def _repr_html_(self) -> str:
        return html_table(f"VerifyReport {self.path}: {self.status}", self._rows())

    def _content(self) -> list[str]:
        if not self.checksums:
            return [plural(len(self.files), "file"), "checksums skipped"]
        return [
            plural(len(self.files), "file"),
            f"{len(self.verified)} verified by hash",
            f"{len(self.unverified)} with no recorded digest",
        ]

    def _rows(self) -> list[tuple[str, object]]:
        damaged = [f.name for f in self.files if f.ok is False]
        return [
            ("files", len(self.files)),
            ("verified by hash", len(self.verified) if self.checksums else "checksums skipped"),
            ("no recorded digest", self.unverified if self.checksums else "-"),
            ("damaged", damaged or "none"),
            ("hashed", f"{format_size(self.bytes_hashed)} in {self.seconds:.2f} s"),
            ("manifests", self.manifests or "none"),
            ("problems", [f"{p.severity}: {p.message}" for p in self.problems] or "none"),
        ]
