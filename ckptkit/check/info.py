"""What :func:`~ckptkit.check.inspect.inspect_checkpoint` reports: :class:`CheckpointInfo` and its
parts, with the one-line ``repr()``, the few-line ``str()`` and the Jupyter table. Torch-free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ckptkit.errors import CkptError
from ckptkit.format.display import dtype_text, html_table, plural, summary_line, text_table
from ckptkit.format.sizes import format_size

__all__ = ["CheckpointInfo", "FileEntry", "Problem", "WeightSetInfo"]


@dataclass
class Problem:
    """One thing wrong, with the file it is about.

    Attributes:
        severity: ``"error"`` (loading would fail) or ``"warning"``.
        kind: the ckptkit error class that loading raises (``"IncompleteCheckpointError"``), or
            ``"warning"``.
        path: the file or directory.
        message: the full message, fix included.
    """

    severity: str
    kind: str
    path: str | None
    message: str

    @classmethod
    def from_error(cls, error: CkptError, severity: str = "error") -> Problem:
        return cls(severity, type(error).__name__, error.path, str(error))


@dataclass
class FileEntry:
    """A file of the checkpoint: its name relative to the directory, size, and link target."""

    name: str
    size: int | None
    link_target: str | None = None
    outside_root: bool = False


@dataclass
class WeightSetInfo:
    """One weight set as :func:`inspect_checkpoint` reports it."""

    label: str
    name: str
    format: str
    variant: str | None
    sharded: bool
    index_file: str | None
    files: list[str]
    missing: list[str]
    selected: bool = False


@dataclass(repr=False)
class CheckpointInfo:
    """What :func:`inspect_checkpoint` found.

    Attributes:
        path: the directory inspected.
        files: every file under it (download bookkeeping excluded), with sizes and link targets.
        weight_sets: every weight set found; ``selected`` marks the one a load would use.
        selected: the label of that set, or ``None``.
        variants: variants present (``"default"`` for no variant).
        tensor_count, parameter_count, total_bytes, bytes_by_dtype: of the selected set
            (``None`` for torch pickles, whose contents need torch to read).
        metadata: the ``__metadata__`` of the selected set's first shard.
        links: the files that are symlinks, with where they point.
        components: for a pipeline, component name -> its own :class:`CheckpointInfo`.
        problems: everything wrong, each naming its file.
        root: the checkpoint root links are judged against (the ``models--org--name`` folder for a
            hub snapshot, else the directory inspected).
    """

    path: str
    files: list[FileEntry] = field(default_factory=list)
    weight_sets: list[WeightSetInfo] = field(default_factory=list)
    selected: str | None = None
    variants: list[str] = field(default_factory=list)
    tensor_count: int | None = None
    parameter_count: int | None = None
    total_bytes: int | None = None
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    components: dict[str, CheckpointInfo] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    component_classes: dict[str, list[str | None]] = field(default_factory=dict)
    root: str | None = None

    @property
    def links(self) -> list[FileEntry]:
        return [f for f in self.files if f.link_target is not None]

    @property
    def ok(self) -> bool:
        """No error anywhere (warnings allowed), components included."""
        return not any(p.severity == "error" for p in self.problems) and all(
            c.ok for c in self.components.values()
        )

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; its keys are stable for scripts."""
        result = asdict(self)
        result["ok"] = self.ok
        result["components"] = {name: info.to_dict() for name, info in self.components.items()}
        return result

    @property
    def errors(self) -> list[Problem]:
        """Every error, components included."""
        own = [p for p in self.problems if p.severity == "error"]
        return own + [p for c in self.components.values() for p in c.errors]

    def __repr__(self) -> str:
        if self.components:
            params = sum(c.parameter_count or 0 for c in self.components.values())
            parts = [f"pipeline of {plural(len(self.components), 'component')}", f"{params:,} parameters"]
        else:
            parts = [
                self.selected or "no weights",
                f"{self.parameter_count:,} parameters" if self.parameter_count is not None else "",
                dtype_text(self.bytes_by_dtype) if self.bytes_by_dtype else "",
            ]
        errors = len(self.errors)
        parts.append(plural(errors, "error") if errors else "ok")
        return summary_line("CheckpointInfo", self.path, parts)

    def __str__(self) -> str:
        return text_table(f"CheckpointInfo {self.path}", self._rows())

    def _repr_html_(self) -> str:
        return html_table(
            f"CheckpointInfo {self.path}",
            self._rows(nested=True),
            columns=["component", "class", "weights", "parameters", "dtypes", "variants", "problems"],
        )

    def _rows(self, nested: bool = False) -> list[tuple[str, object]]:
        rows: list[tuple[str, object]] = []
        if self.components:
            table = [
                (
                    name,
                    ".".join(c for c in self.component_classes.get(name, []) if c) or "-",
                    info.selected or "-",
                    f"{info.parameter_count:,}" if info.parameter_count is not None else "-",
                    dtype_text(info.bytes_by_dtype),
                    ", ".join(info.variants) or "-",
                    str(len(info.errors)) if info.errors else "ok",
                )
                for name, info in self.components.items()
            ]
            text = [
                f"{r[0]}: {r[1]}, {r[3]} parameters, {r[4]}, variants {r[5]}"
                + ("" if r[6] == "ok" else f", {r[6]} errors")
                if r[2] != "-"
                else f"{r[0]}: {r[1]} (no weights)"
                for r in table
            ]
            rows.append(("components", table if nested else text))
        if self.selected or not self.components:
            rows += [
                ("weights", self.selected),
                ("parameters", f"{self.parameter_count:,}" if self.parameter_count is not None else None),
                ("tensors", f"{self.tensor_count:,}" if self.tensor_count is not None else None),
                ("dtypes", dtype_text(self.bytes_by_dtype)),
                ("size", format_size(self.total_bytes) if self.total_bytes is not None else None),
                ("variants", ", ".join(self.variants) or None),
                ("weight sets", [s.label for s in self.weight_sets]),
            ]
        rows.append(("files", f"{len(self.files)} ({format_size(sum(f.size or 0 for f in self.files))})"))
        problems = [p.message for p in self.problems] + [
            p.message for c in self.components.values() for p in c.problems
        ]
        rows.append(("problems", problems or "none"))
        return rows
