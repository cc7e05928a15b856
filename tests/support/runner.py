"""A Runner built around fakes, for the run-loop tests that script what Kafka and Redis answer."""

from __future__ import annotations

import math
from typing import Any, cast

from consumer.avro.outputs import OutputCodecs
from consumer.delivery.committer import Committer
from consumer.health import Health
from consumer.processing.batch import BatchProcessor
from consumer.processing.runner import Runner
from consumer.processing.sweeper import ExpirySweeper
from consumer.state.store import StateStore

TOPIC = "leads.raw"


def fake_runner(
    consumer: Any,
    committer: Committer,
    store: Any,
    processor: Any,
    overlap: bool = True,
    overlap_min_records: int | None = 1,
) -> Runner:
    """No sweeper and no codecs: the timers (expiry sweep, gauges) never come due."""
    runner = Runner(
        make_consumer=lambda _callbacks: cast(Any, consumer),
        committer=committer,
        store=cast(StateStore, store),
        processor=cast(BatchProcessor, processor),
        sweeper=cast(ExpirySweeper, None),
        codecs=cast(OutputCodecs, None),
        health=Health(),
        input_topic=TOPIC,
        batch_size=100,
        batch_wait_s=0.01,
        sweep_interval_s=1.0,
        shutdown_timeout_s=5.0,
        overlap_commits=overlap,
        # 1: every batch overlaps, however small (the tests' batches are); None: the default rule.
        overlap_min_records=overlap_min_records,
    )
    runner.timers.next_sweep = runner.timers.next_counts = math.inf
    return runner
