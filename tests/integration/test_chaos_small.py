"""A small chaos run inside `make test`: kill -9 twice, a Redis outage (with a SIGTERM in it) and
a second instance joining and leaving, over 3,000 events through the real consumer processes;
then every expected lead exactly once, every bad record dead-lettered once, offsets at the end.

It uses the chaos suite's own Kafka + Redis pair (ports CHAOS_KAFKA_PORT / CHAOS_REDIS_PORT,
default 19092 / 16379), started here when absent and stopped after, so that stopping Redis does
not disturb the other tests' servers. The full suite is `make chaos` (docs/chaos.md).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from harness.services import LocalServices
from tests.chaos.driver import Run
from tests.chaos.scenarios import SCENARIOS
from tests.chaos.services import shared
from tests.chaos.stream import generate

EVENTS = 3000


@pytest.fixture(scope="module")
def chaos_services() -> LocalServices:
    return shared()  # started here if absent, stopped when the test process exits


@pytest.mark.timeout(420)
def test_small_chaos_run_loses_and_doubles_nothing(chaos_services: LocalServices, tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.randrange(1_000_000))
    scenario = SCENARIOS["small"]
    started = time.monotonic()
    run = Run(
        "small",
        chaos_services,
        generate(EVENTS, seed),
        rate=100.0,  # 30 s of feed, so the faults land while it flows
        log_dir=tmp_path,
        seed=seed,
        guarantee=scenario.guarantee,
        drain_timeout_s=180.0,
    )
    outcome = run.execute(scenario.function)
    report = outcome.render()
    print(f"\n{report}\n(seed {seed}, {time.monotonic() - started:.0f}s, logs in {tmp_path})")
    assert outcome.ok, f"seed {seed}; CHAOS_SEED={seed} reproduces the stream and moments\n{report}"
