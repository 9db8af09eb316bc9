"""The dependency floors pyproject.toml declares are exactly the versions CI installs for them.

``nox -s compat`` runs the whole suite on ``.ci/compat/floor.txt``; a floor raised or lowered in one
place and not the other would declare a version that no test ever ran on.
"""

from __future__ import annotations

import re
import sys

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests._subprocess import REPO

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as the tomli backport (a dependency of pytest there)
    import tomli as tomllib

FLOOR_FILE = REPO / ".ci" / "compat" / "floor.txt"


def _declared() -> dict[str, Version]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    floors: dict[str, Version] = {}
    for line in [*project["dependencies"], *project["optional-dependencies"]["hf"]]:
        requirement = Requirement(line)
        lower = [s.version for s in requirement.specifier if s.operator == ">="]
        assert lower, f"pyproject.toml: {line!r} declares no floor"
        floors[canonicalize_name(requirement.name)] = Version(lower[0])
    return floors


def _pinned() -> dict[str, Version]:
    pins: dict[str, Version] = {}
    for line in FLOOR_FILE.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==([^\s;]+)", line).groups()  # type: ignore[union-attr]
            pins[canonicalize_name(name)] = Version(version)
    return pins


def test_every_declared_floor_is_the_version_the_floor_stack_installs() -> None:
    declared, pinned = _declared(), _pinned()
    assert "torch" in declared and "huggingface-hub" in declared and "diffusers" in declared
    untested = sorted(name for name in declared if name not in pinned)
    assert untested == [], f"floors no CI stack installs: {untested} (pin them in {FLOOR_FILE.name})"
    differ = {n: (str(declared[n]), str(pinned[n])) for n in declared if declared[n] != pinned[n]}
    assert differ == {}, f"pyproject.toml floor vs {FLOOR_FILE.name} pin: {differ}"
