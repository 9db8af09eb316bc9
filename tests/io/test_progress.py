"""One default for ``progress=None`` in every verb: a terminal on stderr, and huggingface_hub's switch."""

from __future__ import annotations

import io
import sys

from ckptkit.io.progress import progress_enabled


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_none_means_a_terminal_and_the_hub_switch(monkeypatch):
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr("sys.stderr", _Terminal())
    monkeypatch.delitem(sys.modules, "huggingface_hub.utils", raising=False)  # its switch read at import
    assert progress_enabled(None) is True
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    assert progress_enabled(None) is False
    assert progress_enabled(True) is True
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a log file or a pipe: no bar
    assert progress_enabled(None) is False
    assert progress_enabled(True) is True


def test_every_verb_uses_the_one_default():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "ckptkit"
    deciders = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*.py")
        if "isatty()" in p.read_text() or 'HF_HUB_DISABLE_PROGRESS_BARS"' in p.read_text()
    ]
    assert sorted(deciders) == ["cli/verify.py", "io/progress.py"]
