"""A progress line for the long commands (`send --file`, `replay`, `restore-state`) on a terminal:
count, rate and what remains, redrawn twice a second on stderr. In a pipe or a log (not a
terminal) it writes nothing: the commands' one summary line is what those read."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, what: str, total: int | None = None, stream: TextIO = sys.stderr) -> None:
        self._what = what
        self._total = total
        self._stream = stream
        self._on = stream.isatty()
        self._started = time.monotonic()
        self._drawn = 0.0

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self._on or now - self._drawn < 0.5:
            return
        self._drawn = now
        rate = done / max(now - self._started, 1e-6)
        line = f"{self._what}: {done:,}"
        if self._total:
            left = max(self._total - done, 0)
            line += f" of {self._total:,} ({rate:,.0f}/s, {left:,} left, ~{left / rate if rate else 0:.0f} s)"
        else:
            line += f" ({rate:,.0f}/s)"
        self._stream.write(f"\r\x1b[K{line}")
        self._stream.flush()

    def done(self) -> None:
        if self._on and self._drawn:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
