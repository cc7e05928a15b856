"""The time model (contract rule 8): windows on arrival time, expiry on the watermark, one clock.

The real BatchProcessor and ExpirySweeper on an in-memory store whose clock is the shared one.
Each test processes the same arrivals in two ways, as they come and after a delay, and the outcomes
must be the same: what an event decides depends on when it reached Kafka, never on when it was
processed or what the processing instance's clock says.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.avro.codec import Codec
from consumer.avro.outputs import OutputCodecs
from consumer.config import Settings
from consumer.model import SourceRecord
from consumer.processing.batch import BatchProcessor
from consumer.processing.sweeper import ExpirySweeper
from consumer.rules.attribute import Windows
from consumer.state.codec import decode_state
from consumer.state.customer import CustomerState, PartitionKey
from consumer.state.memory import InMemoryStore
from harness.kafka import lead
from tests.support.stores import InterleavingStore
from tests.unit.processing.scenarios import ATTRIBUTED, decode_record
from tests.unit.processing.test_sweeper import store_state

T0 = 1_900_000_000_000
TOPIC = "leads.raw"
PARTITIONS = [(TOPIC, 0), (TOPIC, 1)]
WINDOWS = Windows(pending_ttl_ms=20_000, orphan_grace_ms=5_000, dedupe_ttl_ms=60_000)
CODEC = Codec("lead_event")
CODECS = OutputCodecs(Settings(input_topic=TOPIC))


@dataclass
class Instance:
    """One consumer with the run loop's bookkeeping for the watermark: per partition, the newest
    arrival time committed, and whether records are waiting (then it is not caught up)."""

    clock_ms: int = T0  # the shared clock (Redis's)
    store: InMemoryStore = field(init=False)
    newest: dict[PartitionKey, int] = field(default_factory=dict)
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (topic kind, leadId or reason)

    def __post_init__(self) -> None:
        self.store = InMemoryStore(clock=lambda: self.clock_ms / 1000)
        self.processor = BatchProcessor(self.store, WINDOWS, CODEC, CODECS)
        self.sweeper = ExpirySweeper(self.store, lease_ms=30_000)
        self.offsets = dict.fromkeys(PARTITIONS, 0)

    def process(self, records: Sequence[tuple[PartitionKey, int, dict[str, Any]]]) -> None:
        """Records as (partition, arrival ms, lead event), processed and committed in one batch."""
        sources = []
        for partition, arrival, payload in records:
            sources.append(
                SourceRecord(
                    partition[0], partition[1], self.offsets[partition], None, CODEC.encode(payload), arrival
                )
            )
            self.offsets[partition] += 1
            self.newest[partition] = max(self.newest.get(partition, -1), arrival)
        for output in self.processor.process(sources).outputs:
            if output.topic == CODECS.settings.attributed_topic:
                self.outcomes.append(("attributed", decode_record(ATTRIBUTED, output.value or b"")["leadId"]))

    def sweep(self, behind: set[PartitionKey] | frozenset[PartitionKey] = frozenset()) -> None:
        """Mark the partitions (those with records waiting are behind), then report what is due."""
        marks = {p: (self.newest.get(p, -1), p not in behind) for p in PARTITIONS}
        self.store.mark_partitions(marks, 0)
        while True:  # as the timers do: again at once while a round found more
            claimed = self.sweeper.claim_due(PARTITIONS)
            for lead_ in claimed.leads:
                self.outcomes.append(("unlinked", f"{lead_.reason.value}:{lead_.lead_id}"))
            self.sweeper.release(claimed)
            if not claimed.leads and not claimed.more:
                return


def event1(cid: str) -> dict[str, Any]:
    return lead(cid, "signup", clickId=f"k-{cid}", mode="deferred")


def event2(cid: str) -> dict[str, Any]:
    return lead(cid, "email_verified")


def test_an_outage_longer_than_the_ttl_expires_only_the_unverified() -> None:
    """500 deferred leads whose Event 2s reached Kafka 6 s after their Event 1s, and 50 never
    verified, while the consumer was down for 36 s (the TTL is 20 s): every verified lead is
    attributed and only the 50 expire, as if there had been no outage."""
    verified = [f"v{i}" for i in range(500)]
    lone = [f"u{i}" for i in range(50)]
    firsts = [(PARTITIONS[0], T0, event1(cid)) for cid in verified + lone]
    seconds = [(PARTITIONS[1], T0 + 6_000, event2(cid)) for cid in verified]

    on_time = Instance()
    on_time.process(firsts)
    on_time.clock_ms = T0 + 6_000
    on_time.process(seconds)
    on_time.clock_ms = T0 + 36_000
    on_time.sweep()

    late = Instance(clock_ms=T0 + 36_000)  # back after 36 s: the backlog of both partitions waits
    late.process(firsts)
    late.sweep(behind={PARTITIONS[1]})  # partition 1 not caught up yet: nothing may expire
    assert [kind for kind, _ in late.outcomes if kind == "unlinked"] == []
    late.process(seconds)
    late.sweep()

    assert sorted(late.outcomes) == sorted(on_time.outcomes)
    assert sum(kind == "attributed" for kind, _ in late.outcomes) == 500
    assert sum(kind == "unlinked" for kind, _ in late.outcomes) == 50


def test_a_partition_that_lags_holds_expiries_back_until_it_catches_up() -> None:
    instance = Instance()
    instance.process([(PARTITIONS[0], T0, event1("c1"))])
    instance.newest[PARTITIONS[1]] = T0 + 1_000  # partition 1 processed up to T0 + 1 s, more waiting
    instance.clock_ms = T0 + 60_000
    instance.sweep(behind={PARTITIONS[1]})
    assert instance.outcomes == []  # the deadline (T0 + 20 s) is past the lagging partition's mark
    instance.process([(PARTITIONS[1], T0 + 15_000, event2("c1"))])  # sent in time: it joins
    instance.sweep()
    assert [kind for kind, _ in instance.outcomes] == ["attributed"]


def test_an_idle_partition_does_not_hold_expiries_back() -> None:
    instance = Instance()
    instance.process([(PARTITIONS[0], T0, event1("c1"))])  # partition 1 never gets a record
    instance.clock_ms = T0 + 20_000
    instance.sweep()
    assert [kind for kind, _ in instance.outcomes] == ["unlinked"]


@pytest.mark.parametrize("skew_s", [30, -30, 86_400], ids=["30s-ahead", "30s-behind", "a-day-ahead"])
def test_a_skewed_instance_clock_changes_no_decision(monkeypatch: pytest.MonkeyPatch, skew_s: int) -> None:
    """The instance's own clock (time.time) is off; the shared clock and the arrival times are not."""

    def run() -> list[tuple[str, str]]:
        instance = Instance()
        instance.process([(PARTITIONS[0], T0, event1("c1")), (PARTITIONS[0], T0, event1("c2"))])
        instance.clock_ms = T0 + 10_000
        instance.process([(PARTITIONS[1], T0 + 10_000, event2("c1"))])
        instance.sweep()
        instance.clock_ms = T0 + 25_000
        instance.sweep()
        return instance.outcomes

    expected = run()
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew_s)
    assert run() == expected
    assert [kind for kind, _ in expected] == ["attributed", "unlinked"]


def test_a_write_retried_after_a_conflict_is_decided_at_the_clock_of_its_own_read() -> None:
    """Another instance writes the customer between the batch's read and its write: the
    compare-and-set fails, and the customer is read and decided again at that read's time,
    not the first read's (a lead claimed meanwhile must be judged at the later time)."""
    clock = {"ms": T0}
    store = InterleavingStore(lambda: clock["ms"] / 1000)
    processor = BatchProcessor(store, WINDOWS, CODEC, CODECS)
    processor.process([SourceRecord(TOPIC, 0, 0, None, CODEC.encode(event1("c1")), T0)])
    clock["ms"] = T0 + 2_000

    def another_instance_writes() -> None:
        state = decode_state(store.states["c1"])
        store_state(
            store, "c1", CustomerState(state.pending, state.held, {**state.done, "demo": T0 + 60_000})
        )
        clock["ms"] = T0 + 9_000

    store.before_next_write = another_instance_writes
    result = processor.process([SourceRecord(TOPIC, 1, 0, None, CODEC.encode(event2("c1")), T0 + 1_000)])
    assert result.write_conflicts == 1
    [record] = [o for o in result.outputs if o.topic == CODECS.settings.attributed_topic]
    attributed_at = decode_record(ATTRIBUTED, record.value or b"")["attributedAt"]
    assert round(attributed_at.timestamp() * 1000) == T0 + 9_000  # the retry's read, not T0 + 2 s


# One customer's events, each on the customer's own partition (keyed by cid, as recommended): a
# partition's order is the order of its customers' events, whatever the interleaving.
_EVENT = st.sampled_from(["e1", "e1-other-click", "e2", "direct"])


@st.composite
def arrivals(draw: st.DrawFn) -> list[tuple[PartitionKey, int, dict[str, Any]]]:
    records = []
    moment = T0
    for _ in range(draw(st.integers(1, 25))):
        moment += draw(st.sampled_from([0, 500, 4_000, 6_000, 19_000, 21_000]))
        cid = draw(st.sampled_from(["a", "b", "c"]))
        kind = draw(_EVENT)
        payload = {
            "e1": event1(cid),
            "e1-other-click": lead(cid, "signup", clickId="other", mode="deferred"),
            "e2": event2(cid),
            "direct": lead(cid, "demo", clickId=f"d-{cid}"),
        }[kind]
        records.append((PARTITIONS[0 if cid in "ab" else 1], moment, payload))
    return records


@settings(max_examples=150, deadline=None, database=None)
@given(arrivals(), st.lists(st.integers(0, 1), min_size=1, max_size=60), st.integers(0, 120_000))
def test_processing_late_or_interleaved_otherwise_decides_the_same(
    records: list[tuple[PartitionKey, int, dict[str, Any]]], picks: list[int], delay_ms: int
) -> None:
    """Records processed as they arrive, with a sweep after each, against the same records
    processed from ``delay_ms`` later, one partition's queue at a time in an order drawn by
    hypothesis, with a sweep after each batch: the same leads attributed, the same unlinked."""
    on_time = Instance()
    for record in records:
        on_time.clock_ms = max(on_time.clock_ms, record[1])
        on_time.process([record])
        on_time.sweep()
    on_time.clock_ms += 3_600_000
    on_time.sweep()

    late = Instance(clock_ms=records[-1][1] + delay_ms)
    queues = {p: [r for r in records if r[0] == p] for p in PARTITIONS}
    for pick in picks + [0, 1] * len(records):
        partition = PARTITIONS[pick]
        if queues[partition]:
            batch, queues[partition] = queues[partition][:2], queues[partition][2:]
            late.process(batch)
        late.sweep(behind={p for p, queue in queues.items() if queue})
    late.clock_ms += 3_600_000
    late.sweep()
    assert sorted(late.outcomes) == sorted(on_time.outcomes)
