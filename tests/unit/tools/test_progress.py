"""The progress line shows on a terminal only; a pipe gets nothing."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from consumer.tools import progress as progress_module
from consumer.tools.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_count_rate_and_what_remains(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([0.0, 1.0, 2.0])
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(monotonic=lambda: next(clock)))
    terminal = _Terminal()
    bar = Progress("sending to leads.raw", 1000, terminal)
    bar.update(500)
    bar.done()
    assert "sending to leads.raw: 500 of 1,000 (500/s, 500 left, ~1 s)" in terminal.getvalue()
    assert terminal.getvalue().endswith("\r\x1b[K")


def test_a_pipe_gets_nothing() -> None:
    pipe = io.StringIO()
    bar = Progress("sending", 10, pipe)
    for done in range(1, 11):
        bar.update(done)
    bar.done()
    assert pipe.getvalue() == ""
