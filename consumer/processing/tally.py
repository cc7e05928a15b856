"""A committed batch summed up for the metrics (consumer/metrics.py): counts per label, and the
latency histogram's bucket counts.

The run loop used to walk a batch's ~2,000 decisions and ~1,200 outputs in interpreted Python,
with a Histogram.observe call per output: ~3 us of consumer CPU per event (bench pipeline,
docs/performance.md). Compiled (setup.py), this does the walking; the run loop then makes a
dozen metric calls per batch (metrics.observe_many for the histograms).
"""

from __future__ import annotations

from collections.abc import Sequence

from consumer.avro.outputs import Output
from consumer.model import Decision, Invalid
from consumer.reasons import DeadLetterReason, DuplicateKind, Mode


class Tally:
    """What a batch decided, per metric label."""

    def __init__(self) -> None:
        self.dead_letters: dict[DeadLetterReason, int] = {}
        self.duplicates: dict[DuplicateKind, int] = {}
        self.attributed: dict[Mode, int] = {}
        self.verification_delays_s: list[float] = []


def tally(decisions: Sequence[Decision | Invalid]) -> Tally:
    counts = Tally()
    for decision in decisions:
        if isinstance(decision, Invalid):
            counts.dead_letters[decision.reason] = counts.dead_letters.get(decision.reason, 0) + 1
        elif decision.dead_letter is not None:
            reason = decision.dead_letter
            counts.dead_letters[reason] = counts.dead_letters.get(reason, 0) + 1
        elif decision.duplicate is not None:
            kind = decision.duplicate
            counts.duplicates[kind] = counts.duplicates.get(kind, 0) + 1
        elif decision.attributed is not None:
            mode = decision.attributed.mode
            counts.attributed[mode] = counts.attributed.get(mode, 0) + 1
            if decision.verification_delay_ms is not None:
                counts.verification_delays_s.append(decision.verification_delay_ms / 1000)
    return counts


def latencies_s(outputs: Sequence[Output], now_s: float) -> list[float]:
    """Seconds from each output's input record (its Kafka timestamp) to ``now_s``."""
    return [
        max(0.0, now_s - output.source_timestamp_ms / 1000)
        for output in outputs
        if output.source_timestamp_ms is not None
    ]


def buckets(values: Sequence[float], upper_bounds: Sequence[float]) -> tuple[list[int], float]:
    """(values per bucket, their sum), as Histogram.observe counts them one by one: each value in
    the first bucket whose upper bound is at least the value (the last bound is +Inf)."""
    counts = [0] * len(upper_bounds)
    total = 0.0
    for value in values:
        total += value
        for i, bound in enumerate(upper_bounds):
            if value <= bound:
                counts[i] += 1
                break
    return counts, total
