"""The house's import contract, checked on every ckptkit module (AST only: nothing is imported).

Floors, each importing only from floors below it (or its own):

    0  format/, errors          pure Python, no torch
    1  io/                      bytes <-> tensors, module filling, atomic publish
    2  resolve/ load/ save/ check/ placement/ distributed/   the verbs
    3  adapters/ shims/ cli/    thin, on top
    4  ckptkit/__init__.py, __main__.py   the face

It fails on an upward import, on an import circle between modules (imports inside functions
and under ``TYPE_CHECKING`` count: hiding a circle there is what this forbids), and on an
import of a ckptkit module inside a function unless a comment on that line or the one above
says it keeps torch out of a torch-free path (the words "torch-free" are required).
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "ckptkit"

FLOORS = {
    "format": 0,
    "errors": 0,
    "io": 1,
    "resolve": 2,
    "load": 2,
    "save": 2,
    "check": 2,
    "placement": 2,
    "distributed": 2,
    "adapters": 3,
    "shims": 3,
    "cli": 3,
    "__init__": 4,
    "__main__": 4,
}


@dataclass
class Report:
    upward: list[str] = field(default_factory=list)
    circles: list[list[str]] = field(default_factory=list)
    in_function: list[str] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [
            *(f"upward import: {u}" for u in self.upward),
            *(f"import circle: {' -> '.join(c)}" for c in self.circles),
            *(f"import inside a function without a torch-free-path comment: {i}" for i in self.in_function),
            *(f"module on no floor: {m}" for m in self.unplaced),
        ]


@dataclass
class _Import:
    target: str
    line: int
    in_function: bool
    type_checking: bool


def _module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(tree: ast.Module, module: str, is_package: bool, known: set[str]) -> list[_Import]:
    found: list[_Import] = []

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = module.split(".")
        if not is_package:
            base = base[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, *([node.module] if node.module else [])])

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            guarded = type_checking or (
                isinstance(child, ast.If)
                and isinstance(child.test, (ast.Name, ast.Attribute))
                and ast.unparse(child.test).endswith("TYPE_CHECKING")
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    found.append(_Import(alias.name, child.lineno, inside, guarded))
            elif isinstance(child, ast.ImportFrom):
                base = resolve(child)
                for alias in child.names:
                    name = f"{base}.{alias.name}"
                    found.append(_Import(name if name in known else base, child.lineno, inside, guarded))
            visit(child, inside, guarded)

    visit(tree, False, False)
    return [i for i in found if i.target == known_root(known) or i.target.startswith(known_root(known) + ".")]


def known_root(known: set[str]) -> str:
    return min(known, key=len)


def _floor(root: Path, module: str, floors: dict[str, int]) -> int | None:
    parts = module.split(".")[1:]
    head = parts[0] if parts else "__init__"
    return floors.get(head)


def check_package(root: Path, floors: dict[str, int]) -> Report:
    """Check the package at ``root`` against ``floors`` (first name under the package -> floor)."""
    paths = {_module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    known = set(paths)
    report = Report()
    graph: dict[str, set[str]] = {m: set() for m in paths}
    for module, path in paths.items():
        source = path.read_text()
        lines = source.splitlines()
        floor = _floor(root, module, floors)
        if floor is None:
            report.unplaced.append(module)
            continue
        for imp in _imports(ast.parse(source), module, path.name == "__init__.py", known):
            target = imp.target
            while target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target == module:
                continue
            where = f"{module}:{imp.line} imports {imp.target}"
            target_floor = _floor(root, target, floors)
            if target_floor is not None and target_floor > floor:
                report.upward.append(where)
            if imp.in_function:
                comment = " ".join(lines[max(imp.line - 2, 0) : imp.line])
                if "#" not in comment or "torch-free" not in comment.split("#", 1)[1]:
                    report.in_function.append(where)
            if target != root.name:
                graph[module].add(target)  # TYPE_CHECKING imports count: a circle for the reader too
    report.circles = _circles(graph)
    return report


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


def test_ckptkit_keeps_its_import_contract():
    report = check_package(ROOT, FLOORS)
    assert report.problems == []


# -- the checker itself, on a small synthetic package -------------------------------------------


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


SMALL_FLOORS = {"format": 0, "io": 1, "load": 2, "__init__": 4}


def test_a_planted_upward_import_fails(tmp_path):
    clean = {
        "format/__init__.py": "",
        "format/names.py": "X = 1\n",
        "io/__init__.py": "",
        "io/read.py": "from pkg.format.names import X\n",
        "load/__init__.py": "",
        "load/run.py": "from pkg.io import read\n",
    }
    assert check_package(_package(tmp_path / "a", clean), SMALL_FLOORS).problems == []
    planted = {**clean, "format/names.py": "from pkg.io.read import X\n"}
    report = check_package(_package(tmp_path / "b", planted), SMALL_FLOORS)
    assert report.upward == ["pkg.format.names:1 imports pkg.io.read"]
    assert report.circles == [["pkg.format.names", "pkg.io.read"]]


def test_a_circle_hidden_in_a_function_fails(tmp_path):
    files = {
        "load/__init__.py": "",
        "load/a.py": "from pkg.load.b import g\n\ndef f():\n    return g()\n",
        "load/b.py": "def g():\n    from pkg.load.a import f\n    return f\n",
    }
    report = check_package(_package(tmp_path, files), SMALL_FLOORS)
    assert report.circles == [["pkg.load.a", "pkg.load.b"]]
    assert report.in_function == ["pkg.load.b:2 imports pkg.load.a"]


def test_an_import_in_a_function_needs_the_torch_comment(tmp_path):
    files = {
        "format/__init__.py": "",
        "format/names.py": "X = 1\n",
        "load/__init__.py": "",
        "load/a.py": "def f():\n    from pkg.format.names import X\n    return X\n",
        "load/d.py": "def f():\n    # torch maps this lazily\n    from pkg.format.names import X\n    return X\n",
        "load/b.py": (
            "def f():\n    # keeps torch out of the torch-free inspect path\n"
            "    from pkg.format.names import X\n    return X\n"
        ),
        "load/c.py": "from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg.load.a import f\n",
    }
    report = check_package(_package(tmp_path, files), SMALL_FLOORS)
    assert report.in_function == [
        "pkg.load.a:2 imports pkg.format.names",
        "pkg.load.d:3 imports pkg.format.names",
    ]
    assert report.circles == [] and report.upward == []


def test_a_circle_hidden_under_type_checking_fails(tmp_path):
    files = {
        "load/__init__.py": "",
        "load/a.py": "from pkg.load.b import g\n",
        "load/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.load.a import A\ng = 1\n",
    }
    assert check_package(_package(tmp_path, files), SMALL_FLOORS).circles == [["pkg.load.a", "pkg.load.b"]]


def test_a_module_on_no_floor_fails(tmp_path):
    report = check_package(_package(tmp_path, {"helpers.py": "Y = 2\n"}), SMALL_FLOORS)
    assert report.unplaced == ["pkg.helpers"]


@pytest.mark.parametrize("module", ["ckptkit.format.keys", "ckptkit.io.module_fill"])
def test_the_floors_know_the_real_modules(module):
    assert module in {_module_name(ROOT, p) for p in ROOT.rglob("*.py")}


def test_no_module_is_over_450_lines():
    long = {
        p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.py") if len(p.read_text().splitlines()) > 450
    }
    assert long == set()
