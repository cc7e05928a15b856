"""Loaded by Python at start-up when this folder is on PYTHONPATH (the fault suite's clock
scenario): shifts this process's own wall clock, time.time, and nothing else.

CHAOS_CLOCK_OFFSET_S     seconds added from the start (30: ahead, -30: behind)
CHAOS_CLOCK_STEP_S       seconds added on top once CHAOS_CLOCK_STEP_AFTER_S have passed (a step)

librdkafka's clocks are left alone (libfaketime would shift its timers too): the consumer's
decisions must not depend on its own clock, which is what the scenario checks.
"""

import os
import time

_real_time = time.time
_real_time_ns = time.time_ns
_offset = float(os.environ.get("CHAOS_CLOCK_OFFSET_S", "0"))
_step = float(os.environ.get("CHAOS_CLOCK_STEP_S", "0"))
_step_at = _real_time() + float(os.environ.get("CHAOS_CLOCK_STEP_AFTER_S", "0"))


def _shift(now: float) -> float:
    return _offset + (_step if now >= _step_at else 0.0)


def _time() -> float:
    now = _real_time()
    return now + _shift(now)


def _time_ns() -> int:
    now = _real_time_ns()
    return now + int(_shift(now / 1e9) * 1e9)


time.time = _time
time.time_ns = _time_ns
