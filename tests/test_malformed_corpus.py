"""Every malformed checkpoint of the corpus gets its typed CkptError, naming the file, fast,
and nothing is written next to it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from ckptkit import inspect_checkpoint, resave, resolve_ckpt_dir, verify_checkpoint
from ckptkit.errors import CkptError
from ckptkit.format.torch_pickle import scan_torch_file
from ckptkit.format.validate import check_weight_set
from tests.malformed import CASES, Case


def _snapshot(root: Path) -> dict[str, tuple[int, float]]:
    return {
        os.path.join(d, f): (os.lstat(os.path.join(d, f)).st_size, os.lstat(os.path.join(d, f)).st_mtime)
        for d, _, files in os.walk(root)
        for f in files
    }


def _open_and_validate(spec: Path) -> None:
    ckpt = resolve_ckpt_dir(spec)
    assert ckpt.weight_set is not None
    check_weight_set(ckpt.weight_set).raise_first()
    if ckpt.format == "torch":
        for path in ckpt.weight_files:
            scan_torch_file(path)


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 30


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # The corpus is about files on disk: a hub snapshot in it must not send ckptkit to the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize("name", sorted(CASES))
def test_case_raises_typed_error_naming_the_file(tmp_path: Path, name: str) -> None:
    case: Case = CASES[name](tmp_path / name)
    before = _snapshot(tmp_path)
    started = time.monotonic()
    with pytest.raises(case.error) as info:
        _open_and_validate(case.spec)
    assert time.monotonic() - started < 5
    assert case.names in str(info.value), str(info.value)
    assert _snapshot(tmp_path) == before
    if case.sentinel is not None:
        assert not case.sentinel.exists()


@pytest.mark.parametrize("name", sorted(CASES))
def test_inspect_reports_each_case_without_raising(tmp_path: Path, name: str) -> None:
    case: Case = CASES[name](tmp_path / name)
    try:
        info = inspect_checkpoint(case.spec)
    except CkptError as exc:  # only resolution of the spec itself may raise
        assert isinstance(exc, case.error)
        return
    assert not info.ok
    assert any(case.names in p.message for p in info.problems if p.severity == "error")
    if case.sentinel is not None:
        assert not case.sentinel.exists()


# No case needs a different error for resave or verify: resave checks a zip torch file's pickle
# and record sizes (the same scan validation uses) before torch maps it, so it answers exactly as
# the loader path above does.


@pytest.mark.parametrize("name", sorted(CASES))
def test_resave_refuses_each_case_and_writes_nothing(tmp_path: Path, name: str) -> None:
    case: Case = CASES[name](tmp_path / name)
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    dst = out_parent / "dst"
    before = _snapshot(tmp_path / name)
    started = time.monotonic()
    with pytest.raises(case.error) as info:
        resave(case.spec, dst, progress=False)
    assert time.monotonic() - started < 5
    assert case.names in str(info.value), str(info.value)
    assert not os.path.lexists(dst)
    assert os.listdir(out_parent) == [], "resave left temporary files next to dst"
    assert _snapshot(tmp_path / name) == before
    if case.sentinel is not None:
        assert not case.sentinel.exists()


@pytest.mark.parametrize("name", sorted(CASES))
def test_verify_reports_each_case(tmp_path: Path, name: str) -> None:
    case: Case = CASES[name](tmp_path / name)
    before = _snapshot(tmp_path)
    try:
        report = verify_checkpoint(case.spec, progress=False)
    except CkptError as exc:  # only resolution of the spec itself may raise
        assert isinstance(exc, case.error)
        assert case.names in str(exc), str(exc)
    else:
        assert not report.ok
        assert any(case.names in p.message for p in report.problems if p.severity == "error"), report.problems
    assert _snapshot(tmp_path) == before
    if case.sentinel is not None:
        assert not case.sentinel.exists()
