"""A batch summed up for the metrics (consumer/processing/tally.py, metrics.observe_many): the same numbers
as counting decision by decision and observing value by value."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from consumer import metrics
from consumer.avro.outputs import Output
from consumer.model import AttributedLead, Decision, Invalid
from consumer.processing.tally import latencies_s, tally
from consumer.reasons import DeadLetterReason, DuplicateKind, Mode

BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


def _lead(mode: Mode) -> AttributedLead:
    return AttributedLead("id", "c", "k", "signup", mode, None, None, None, None, None, None, None, 0)


def test_tally_counts_each_label_as_the_decisions_say() -> None:
    rng = random.Random(3)
    choices: list[Decision | Invalid] = [
        Invalid(DeadLetterReason.UNDECODABLE, "x"),
        Invalid(DeadLetterReason.INVALID_FIELD, "x"),
        Decision(dead_letter=DeadLetterReason.DUPLICATE_ATTRIBUTION),
        Decision(duplicate=DuplicateKind.DIRECT),
        Decision(duplicate=DuplicateKind.VERIFICATION),
        Decision(attributed=_lead(Mode.DIRECT)),
        Decision(attributed=_lead(Mode.DEFERRED), verification_delay_ms=1_500),
        Decision(),  # a state change only: counted nowhere
    ]
    decisions = [rng.choice(choices) for _ in range(500)]
    counts = tally(decisions)
    dead = Counter(d.reason if isinstance(d, Invalid) else d.dead_letter for d in decisions)
    dead.pop(None, None)
    assert counts.dead_letters == dict(dead)
    duplicates = Counter(d.duplicate for d in decisions if isinstance(d, Decision) and d.duplicate)
    assert counts.duplicates == dict(duplicates)
    modes = Counter(d.attributed.mode for d in decisions if isinstance(d, Decision) and d.attributed)
    assert counts.attributed == dict(modes)
    assert counts.verification_delays_s == [1.5] * modes[Mode.DEFERRED]


def test_observe_many_exposes_what_observing_one_by_one_does() -> None:
    rng = random.Random(5)
    values = [*BOUNDS, 0.0, 3.0, 1e9] + [rng.uniform(0, 3) for _ in range(300)]
    one_by_one, at_once = CollectorRegistry(), CollectorRegistry()
    single = Histogram("h", "h", buckets=BOUNDS, registry=one_by_one)
    many = Histogram("h", "h", buckets=BOUNDS, registry=at_once)
    for value in values:
        single.observe(value)
    metrics.observe_many(many, values[:100])
    metrics.observe_many(many, values[100:])
    metrics.observe_many(many, [])
    for bound in [*(str(float(b)) for b in BOUNDS), "+Inf"]:
        labels = {"le": bound}
        expected = one_by_one.get_sample_value("h_bucket", labels)
        assert expected is not None
        assert at_once.get_sample_value("h_bucket", labels) == expected
    assert at_once.get_sample_value("h_count") == one_by_one.get_sample_value("h_count") == len(values)
    # The same sum, added up in another order (floating point: equal to the last digits or so).
    assert at_once.get_sample_value("h_sum") == pytest.approx(one_by_one.get_sample_value("h_sum"))
    assert generate_latest(at_once).count(b"h_bucket") == generate_latest(one_by_one).count(b"h_bucket")


def test_latencies_are_measured_from_each_input_record() -> None:
    outputs = [
        Output("t", None, b"", 10_000),
        Output("t", None, b"", None),  # no input timestamp: not observed
        Output("t", None, b"", 12_500),  # after "now" (clock skew): observed as 0
    ]
    assert latencies_s(outputs, 12.0) == [2.0, 0.0]
