"""The broker's JIT compiler, watched: a JVM that has just started compiles its hot code for
minutes, and on this 2-core machine that CPU is taken from the consumer under test (a fresh
broker's compiler threads used 0.47 of a core during a 5,000 events/s latency run, 0.01 ten
minutes later; measured from /proc, 14:50-15:00 UTC). Production brokers are warm: the bench warms
this one up until its compiler is down to background work (bench/cli.py), and reports what the
compiler used during each phase.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# HotSpot names its compiler threads "C1 CompilerThread0", "C2 CompilerThread1", ... (15 characters
# of it in /proc: "C2 CompilerThre").
_COMPILER = "CompilerThre"
_TICK = os.sysconf("SC_CLK_TCK")


def compiler_seconds(pid: int | None) -> float | None:
    """CPU seconds the JVM ``pid``'s compiler threads have used so far (None: not readable)."""
    if pid is None:
        return None
    total = 0
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue  # the thread ended meanwhile
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        if _COMPILER in name:
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / _TICK


class Watch:
    """The compiler's share of a core between start and ``cores()``."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._cpu = compiler_seconds(pid)
        self._t = time.monotonic()

    def cores(self) -> float | None:
        now = compiler_seconds(self.pid)
        elapsed = time.monotonic() - self._t
        if now is None or self._cpu is None or elapsed <= 0:
            return None
        return round((now - self._cpu) / elapsed, 3)
