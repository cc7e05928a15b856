"""Property tests: the real BatchProcessor + ExpirySweeper + InMemoryStore against a reference model.

Hypothesis generates interleavings for three customers ("c1", "C1" and "c1 " are three different
customers: cids compare exactly) of direct leads, deferred Event 1s, Event 2s, exact duplicates,
`clickId: ""`, bad records and clock advances across the grace period, the pending TTL and the
dedupe window, in batches of random sizes on two partitions. Every output is decoded with
fastavro against the bundled schemas and compared with tests/unit/reference_model.py.

Properties:
- model: per batch, the multiset of published records and the duplicate counts by kind; per sweep
  (a clock advance, then claim_due/release until nothing is claimed), the unlinked records;
- (a) replay: processing a batch again with the same sources (an aborted transaction), whole or
  cut in two, at once or later, publishes the same records (byte-identical, but for the failedAt
  of invalid input on a later replay, which is documented) and changes no state, journal, index or
  counter;
- (b) once the clock passes every deadline, every pending lead and held Event 2 has been reported
  exactly once, nothing is left, and a further sweep reports nothing; once it also passes every
  dedupe window, the sweeper has deleted every state and no wake entry is left (states have no
  TTL: this is what keeps them from leaking);
- (c) after every step, the store's pending/held counters equal the items across all states, and
  every stored state has a wake entry (second, cid) for its wake time;
- a sweeper that claims and then dies (its transaction aborted) delays reports, loses none;
- all of the above with a sweeper claiming between a batch's read and write (compare-and-set
  conflicts), and with other window lengths (pending TTL = grace; dedupe shorter than both).
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.avro.codec import Codec
from consumer.avro.outputs import Output, OutputCodecs
from consumer.config import Settings
from consumer.model import Decision, SourceRecord
from consumer.processing.batch import BatchProcessor, BatchResult
from consumer.processing.sweeper import Claimed, ExpirySweeper
from consumer.reasons import DeadLetterReason, DuplicateKind, Mode, UnlinkedReason
from consumer.rules.attribute import Windows
from consumer.state.codec import decode_state
from tests.support.stores import InterleavingStore, audit
from tests.unit.reference_model import (
    VALID_AVATARS,
    VALID_EMAILS,
    VALID_TIMESTAMPS,
    Attributed,
    DeadLetter,
    Input,
    Record,
    ReferenceModel,
    Unlinked,
    freeze_metadata,
)

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"


def _schema(name: str) -> Any:
    return parse_schema(json.loads((SCHEMAS / f"{name}.avsc").read_text()))


LEAD_EVENT = _schema("lead_event")
ATTRIBUTED = _schema("attributed_lead")
UNLINKED = _schema("unlinked_lead")
DEAD_LETTER = _schema("dead_letter")

WINDOWS = Windows(pending_ttl_ms=10_000, orphan_grace_ms=5_000, dedupe_ttl_ms=60_000)
OTHER_WINDOWS = (
    Windows(pending_ttl_ms=5_000, orphan_grace_ms=5_000, dedupe_ttl_ms=60_000),  # deadlines coincide
    Windows(pending_ttl_ms=10_000, orphan_grace_ms=5_000, dedupe_ttl_ms=2_500),  # dedupe shortest
)
LEASE_MS = 30_000
# Clock values are multiples of 250 ms: exact in binary, so clock() * 1000 loses no millisecond.
T0_MS = 1_000_000_000
ADVANCES_MS = (250, 1_000, 4_750, 5_000, 5_250, 9_750, 10_000, 10_250, 30_000, 60_000, 61_000)
INPUT_TOPIC = "leads.raw"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CODECS = OutputCodecs(Settings())
DECODER = Codec("lead_event")

CIDS = ("c1", "C1", "c1 ")
CLICKS = ("k1", "k2")
EVENT1_NAMES = ("signup", "trial")
EVENT2_NAMES = ("email_verified", "phone_verified")
# One defect each, so the expected reason does not depend on the order the rules are checked in.
BAD_MODES = ("Deferred", "direct", "")
MUTATIONS: tuple[tuple[str, Any], ...] = (
    ("customerExternalId", ""),
    ("customerExternalId", "c" * 101),
    ("eventName", ""),
    ("eventName", "e" * 256),
    ("clickId", "k" * 101),
    ("customerName", "n" * 101),
    ("customerEmail", "not-an-email"),
    ("customerAvatar", "ftp://img.example.com/a.png"),
    ("timestamp", "2024-01-01T00:00:00"),
    ("timestamp", "yesterday"),
    ("metadata", {"k": "v" * 10_000}),
)
GARBAGE = (b"", b"\xff\xff garbage", b"\x00")
# Dead letters decided from the input alone, not by the rules (and so not journaled).
INPUT_REASONS = frozenset(
    r.value for r in DeadLetterReason if r is not DeadLetterReason.DUPLICATE_ATTRIBUTION
)

PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)


# --- scenarios ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    partition: int
    key: bytes | None
    payload: Mapping[str, Any] | bytes  # bytes: not a LeadEvent at all


@dataclass(frozen=True, slots=True)
class Batch:
    records: tuple[Send, ...]
    # A sweeper claims due items while the batch is between its read and its write (a
    # compare-and-set conflict), and publishes and releases them after the batch.
    interleave_sweep: bool = False
    # Process it again, as after an aborted Kafka transaction: None = no abort, 0 = the re-poll
    # returns the same batch, k = it returns the first k records, then the rest in a second batch.
    replay: int | None = None


@dataclass(frozen=True, slots=True)
class Advance:
    ms: int
    sweep: bool = True
    crash: bool = False  # a sweeper claims due items, then dies before publishing and releasing
    # Land ms after the n-th next deadline or dedupe expiry instead: windows tested at their edges.
    to_deadline: int | None = None


Step = Batch | Advance


def encode_lead(record: Mapping[str, Any]) -> bytes:
    buffer = io.BytesIO()
    schemaless_writer(buffer, LEAD_EVENT, dict(record))
    return buffer.getvalue()


def _blank(cid: str, event_name: str) -> dict[str, Any]:
    return {
        "customerExternalId": cid,
        "eventName": event_name,
        "clickId": None,
        "mode": None,
        "timestamp": None,
        "customerName": None,
        "customerEmail": None,
        "customerAvatar": None,
        "metadata": None,
    }


def _cores() -> list[dict[str, Any]]:
    """Every (kind, cid, eventName, clickId) the scenarios use, deferred Event 1s and Event 2s twice."""
    cores = []
    for cid in CIDS:
        for name in EVENT1_NAMES:
            for click in CLICKS:
                cores.append({**_blank(cid, name), "clickId": click})
                cores += [{**_blank(cid, name), "clickId": click, "mode": "deferred"}] * 2
        for name in EVENT2_NAMES:
            cores += [{**_blank(cid, name), "clickId": None}, {**_blank(cid, name), "clickId": ""}]
    return cores


# Customer details, as one draw: fewer draws keep generation cheaper than running the test.
_DETAILS: tuple[dict[str, Any], ...] = (
    {},
    {"timestamp": "2024-01-01T00:00:00Z", "customerName": "Ann", "customerEmail": "ann@example.com"},
    {"timestamp": "2024-01-01T02:00:00+02:00", "customerName": "Bob", "metadata": {"utm_source": "ads"}},
    {"timestamp": "2023-06-15T12:30:00.500+00:00", "customerAvatar": "https://img.example.com/a.png"},
    {"customerEmail": "bob.b+leads@mail.example.org", "customerAvatar": "http://cdn.example.net/b"},
    {"customerName": "Ann", "metadata": {}},
)
assert all(
    d.get("timestamp") in (None, *VALID_TIMESTAMPS)
    and d.get("customerEmail") in (None, *VALID_EMAILS)
    and d.get("customerAvatar") in (None, *VALID_AVATARS)
    for d in _DETAILS
)

# Strategies are built once: building them inside a composite costs more than running the test.
_CORE = st.sampled_from(_cores())
_DETAIL = st.sampled_from(_DETAILS)
_NO_CLICK = st.sampled_from((None, ""))  # "" is treated as absent
_DEFECT = st.sampled_from(("garbage", "truncated", "trailing", "no_click", "mode", "field"))
_BAD_MODE = st.sampled_from(BAD_MODES)
_GARBAGE = st.sampled_from(GARBAGE)
_MUTATION = st.sampled_from(MUTATIONS)
_PARTITION = st.integers(0, 1)
_CHOICE = st.integers(0, 9)
_ADVANCE = st.sampled_from(ADVANCES_MS)
_NEAR = st.sampled_from((-250, 0, 0, 250))
_QUARTER = st.integers(0, 3)
_KEY = st.sampled_from(("cid", "none", "other"))


@st.composite
def valid_records(draw: st.DrawFn) -> dict[str, Any]:
    return {**draw(_CORE), **draw(_DETAIL)}


VALID_RECORDS = valid_records()


@st.composite
def bad_payloads(draw: st.DrawFn) -> Mapping[str, Any] | bytes:
    how = draw(_DEFECT)
    if how == "garbage":
        return draw(_GARBAGE)
    base = draw(VALID_RECORDS)
    if how == "truncated":
        return encode_lead(base)[:-1]
    if how == "trailing":
        return encode_lead(base) + b"\x00"
    if how == "no_click":
        return {**base, "mode": "deferred", "clickId": draw(_NO_CLICK)}
    if how == "mode":
        return {**base, "mode": draw(_BAD_MODE)}
    name, value = draw(_MUTATION)
    return {**base, name: value}


BAD_PAYLOADS = bad_payloads()


@st.composite
def scenarios(draw: st.DrawFn, crashes: bool = False) -> list[Step]:
    steps: list[Step] = []
    sent: list[Send] = []
    for _ in range(draw(st.integers(1, 14))):
        if draw(st.integers(0, 2)) == 0:
            sweep = draw(st.booleans())
            crash = crashes and draw(st.booleans())
            if draw(st.booleans()):
                nth = draw(_QUARTER)
                steps.append(Advance(draw(_NEAR), sweep=sweep, crash=crash, to_deadline=nth))
            else:
                steps.append(Advance(draw(_ADVANCE), sweep=sweep, crash=crash))
            continue
        records: list[Send] = []
        for _ in range(draw(st.integers(1, 6))):
            choice = draw(_CHOICE)
            if choice == 0 and sent:
                records.append(sent[draw(st.integers(0, len(sent) - 1))])  # exact duplicate
                continue
            payload = draw(BAD_PAYLOADS) if choice == 1 else draw(VALID_RECORDS)
            cid = payload.get("customerExternalId", "c1") if isinstance(payload, Mapping) else "c1"
            # The key is recommended, not required: correctness must not depend on it.
            key = {"cid": str(cid).encode(), "none": None, "other": b"someone-else"}[draw(_KEY)]
            records.append(Send(draw(_PARTITION), key, payload))
            sent.append(records[-1])
        replay = draw(st.integers(0, len(records) - 1)) if draw(_QUARTER) == 0 else None
        steps.append(Batch(tuple(records), draw(_QUARTER) == 0, replay))
    return steps


# --- the harness: real pipeline and sweeper on one side, the model on the other -----------------


def _at(value: datetime) -> int:
    """A decoded timestamp-millis back to epoch milliseconds, without float rounding."""
    return (value - EPOCH) // timedelta(milliseconds=1)


def _ms(value: datetime | None) -> int | None:
    return None if value is None else _at(value)


def _decode(schema: Any, data: bytes) -> dict[str, Any]:
    buffer = io.BytesIO(data)
    record = schemaless_reader(buffer, schema)
    assert isinstance(record, dict)
    assert buffer.tell() == len(data), "trailing bytes after an output record"
    return record


def _outcome(record: Record) -> str:
    if isinstance(record, Attributed):
        return f"attributed:{record.mode}"
    return f"{'unlinked' if isinstance(record, Unlinked) else 'dead_letter'}:{record.reason}"


def without_detected_at(records: Iterable[Unlinked]) -> Counter[Unlinked]:
    return Counter(replace(r, detected_at=0) for r in records)


class Harness:
    def __init__(self, replay_delay_ms: int = 0, crashes: bool = False, windows: Windows = WINDOWS) -> None:
        self.now_ms = T0_MS
        self.replay_delay_ms = replay_delay_ms
        self.crashes = crashes
        self.windows = windows
        self.store = InterleavingStore()
        self.codecs = CODECS
        self.processor = BatchProcessor(self.store, windows, DECODER, self.codecs, clock=self.clock)
        self.sweeper = ExpirySweeper(self.store, LEASE_MS, clock=self.clock)
        self.model = ReferenceModel(windows.pending_ttl_ms, windows.orphan_grace_ms, windows.dedupe_ttl_ms)
        self.next_offset = [0, 0]
        self.sources: dict[tuple[int, int], SourceRecord] = {}
        self.reported: list[Unlinked] = []  # unlinked records committed by sweeps
        self.expected_reported: list[Unlinked] = []
        self.stored = Counter[str]()  # model-independent accounting for property (b)
        self.outcomes = Counter[str]()  # what the scenario exercised

    def clock(self) -> float:
        return self.now_ms / 1000

    def run(self, steps: Sequence[Step]) -> None:
        for step in steps:
            if isinstance(step, Batch):
                self.batch(step)
            else:
                self.advance(step)
        self.finish()

    # batches

    def sources_for(self, records: Sequence[Send]) -> tuple[list[SourceRecord], list[Input]]:
        sources, inputs = [], []
        for send in records:
            offset = self.next_offset[send.partition]
            self.next_offset[send.partition] += 1
            value = send.payload if isinstance(send.payload, bytes) else encode_lead(send.payload)
            source = SourceRecord(INPUT_TOPIC, send.partition, offset, send.key, value, self.now_ms - 500)
            self.sources[(send.partition, offset)] = source
            sources.append(source)
            inputs.append(Input(send.partition, offset, send.key, send.payload))
        return sources, inputs

    def batch(self, step: Batch) -> None:
        sources, inputs = self.sources_for(step.records)
        expected = self.model.batch(self.now_ms, inputs)
        claimed: list[tuple[int, Claimed]] = []
        if step.interleave_sweep:
            self.store.before_next_write = lambda: claimed.append((self.now_ms, self.sweeper.claim_due()))
        result = self.processor.process(sources)
        if step.replay is not None:
            result = self.replay(sources, result, step.replay)
        self.store.forget_journal(result.journal)  # the batch's transaction committed
        if step.interleave_sweep:
            self.store.before_next_write = None
            self.sweep(claimed)
        actual = Counter(self.project(o) for o in result.outputs)
        assert self.comparable(actual) == self.comparable(Counter(expected.records))
        duplicates = Counter(
            d.duplicate for d in result.decisions if isinstance(d, Decision) and d.duplicate is not None
        )
        assert duplicates == expected.duplicates
        self.account(step.records, result.decisions)
        self.outcomes.update(f"duplicate:{kind.value}" for kind in duplicates.elements())
        self.outcomes.update(_outcome(r) for r in actual.elements())
        self.check_store()

    def replay(self, sources: list[SourceRecord], first: BatchResult, split: int) -> BatchResult:
        """Property (a): the same sources again, as after an aborted transaction, possibly later
        and possibly cut in two batches: the same outputs, byte for byte, and no change to state,
        journal, index or counters."""
        before = self.snapshot()
        self.now_ms += self.replay_delay_ms  # re-polled after the abort; no sweep in between
        parts = [sources[:split], sources[split:]] if split else [sources]
        results = [self.processor.process(part) for part in parts]
        assert self.snapshot() == before
        again = BatchResult(
            outputs=[o for r in results for o in r.outputs],
            decisions=[d for r in results for d in r.decisions],
            offsets={k: v for r in results for k, v in r.offsets.items()},
        )
        for r in results:
            for cid, fields in r.journal.items():
                again.journal.setdefault(cid, []).extend(fields)
        assert again.decisions == first.decisions
        assert again.offsets == first.offsets
        assert [o.topic for o in again.outputs] == [o.topic for o in first.outputs]
        for a, b in zip(first.outputs, again.outputs, strict=True):
            assert a.key == b.key
            if self.replay_delay_ms == 0:
                assert a.value == b.value
            else:
                x, y = self.project(a), self.project(b)
                assert self.comparable(Counter([x])) == self.comparable(Counter([y]))
        return again

    def comparable(self, records: Counter[Record]) -> Counter[Record]:
        """Documented behaviour: a later replay re-stamps failedAt of invalid input (not journaled)."""
        if self.replay_delay_ms == 0:
            return records
        return Counter(
            {
                replace(r, failed_at=0) if isinstance(r, DeadLetter) and r.reason in INPUT_REASONS else r: n
                for r, n in records.items()
            }
        )

    def snapshot(self) -> tuple[object, ...]:
        store = self.store
        journals = {cid: dict(entries) for cid, entries in store.journals.items()}
        wakes = {second: list(cids) for second, cids in store.wakes.items()}
        return dict(store.states), journals, wakes, store.counts()

    def account(self, records: Sequence[Send], decisions: Sequence[object]) -> None:
        for send, decision in zip(records, decisions, strict=True):
            if not isinstance(decision, Decision):
                continue
            assert isinstance(send.payload, Mapping)
            verification = not send.payload.get("clickId")
            if decision.attributed is not None and decision.attributed.mode == Mode.DEFERRED:
                self.stored["pending_joined" if verification else "held_joined"] += 1
            elif decision.attributed is None and decision.dead_letter is None and decision.duplicate is None:
                self.stored["held" if verification else "pending"] += 1

    def project(self, output: Output) -> Record:
        """Decode an output with fastavro and check what the model does not track (keys, bytes)."""
        settings_ = self.codecs.settings
        if output.topic == settings_.dead_letter_topic:
            r = _decode(DEAD_LETTER, output.value)
            source = self.sources[(r["sourcePartition"], r["sourceOffset"])]
            assert (r["sourceTopic"], r["key"], r["value"]) == (INPUT_TOPIC, source.key, source.value)
            assert output.key == source.key
            return DeadLetter(
                r["reason"], r["sourcePartition"], r["sourceOffset"], r["key"], _at(r["failedAt"])
            )
        if output.topic == settings_.attributed_topic:
            r = _decode(ATTRIBUTED, output.value)
            assert output.key == r["customerExternalId"].encode()
            return Attributed(
                lead_id=r["leadId"],
                cid=r["customerExternalId"],
                click_id=r["clickId"],
                event_name=r["eventName"],
                mode=r["mode"],
                verification_event_name=r["verificationEventName"],
                customer_name=r["customerName"],
                customer_email=r["customerEmail"],
                customer_avatar=r["customerAvatar"],
                metadata=freeze_metadata(r["metadata"]),
                event_timestamp=_ms(r["eventTimestamp"]),
                verified_timestamp=_ms(r["verifiedTimestamp"]),
                attributed_at=_at(r["attributedAt"]),
            )
        assert output.topic == settings_.unlinked_topic
        r = _decode(UNLINKED, output.value)
        assert output.key == r["customerExternalId"].encode()
        return Unlinked(
            lead_id=r["leadId"],
            cid=r["customerExternalId"],
            reason=r["reason"],
            event_name=r["eventName"],
            click_id=r["clickId"],
            customer_name=r["customerName"],
            customer_email=r["customerEmail"],
            customer_avatar=r["customerAvatar"],
            metadata=freeze_metadata(r["metadata"]),
            event_timestamp=_ms(r["eventTimestamp"]),
            detected_at=_at(r["detectedAt"]),
        )

    # time and sweeps

    def advance(self, step: Advance) -> None:
        upcoming = sorted({d for d in self.model.deadlines() if d > self.now_ms})
        if step.to_deadline is None or not upcoming:
            self.now_ms += step.ms if step.to_deadline is None else 250
        else:
            target = upcoming[min(step.to_deadline, len(upcoming) - 1)] + step.ms
            self.now_ms = max(self.now_ms, target)
        if step.crash:
            self.sweeper.claim_due()  # claimed, then the process died: nothing published or released
        if step.sweep:
            self.sweep()
        self.check_store()

    def sweep(self, already_claimed: Sequence[tuple[int, Claimed]] = ()) -> None:
        """What the run loop does: claim, publish, release, until a round claims nothing."""
        reported: list[Unlinked] = []
        expected: list[Unlinked] = []
        for claimed_at_ms, claimed in already_claimed:
            self.publish_and_release(claimed, reported)
            expected += self.model.sweep(claimed_at_ms)
        for _ in range(50):
            claimed = self.sweeper.claim_due()
            if not claimed.leads:
                break
            self.publish_and_release(claimed, reported)
        else:
            pytest.fail("the sweeper keeps claiming items")
        expected += self.model.sweep(self.now_ms)
        if not self.crashes:
            assert Counter(reported) == Counter(expected)
        self.reported += reported
        self.outcomes.update(_outcome(r) for r in reported)
        self.expected_reported += expected

    def publish_and_release(self, claimed: Claimed, reported: list[Unlinked]) -> None:
        for lead in claimed.leads:
            record = self.project(self.codecs.unlinked_output(lead))
            assert isinstance(record, Unlinked)
            reported.append(record)
        self.sweeper.release(claimed)

    def check_store(self) -> None:
        """Property (c): counters and index agree with the states they describe."""
        found = audit(self.store.states.items(), self.store.wake_entries())
        assert found.unindexed == [], "stored states the sweeper would never visit (or empty ones)"
        assert self.store.counts() == (found.pending, found.held)
        if not self.crashes:  # a crashed claim keeps its items until the lease runs out
            assert (found.pending, found.held) == self.model.outstanding()

    def finish(self) -> None:
        """Property (b): past every deadline and lease, everything was reported exactly once."""
        self.now_ms += max(self.windows.pending_ttl_ms, self.windows.orphan_grace_ms) + LEASE_MS + 1_000
        self.sweep()
        self.check_store()
        assert self.store.counts() == (0, 0)
        assert self.model.outstanding() == (0, 0)
        assert all(not decode_state(blob).items() for blob in self.store.states.values())
        self.now_ms += LEASE_MS + 1_000
        assert not self.sweeper.claim_due().leads
        self.now_ms += self.windows.dedupe_ttl_ms + 1_000  # every dedupe mark lapses too
        for _ in range(10):
            assert not self.sweeper.claim_due().leads
        assert self.store.states == {}
        assert self.store.wakes == {}

        by_reason = Counter(r.reason for r in self.reported)
        expired = self.stored["pending"] - self.stored["pending_joined"]
        orphans = self.stored["held"] - self.stored["held_joined"]
        assert by_reason[UnlinkedReason.VERIFICATION_EXPIRED.value] == expired
        assert by_reason[UnlinkedReason.NO_MATCHING_EVENT1.value] == orphans
        assert without_detected_at(self.reported) == without_detected_at(self.expected_reported)


# --- the properties ---------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(scenarios(), st.sampled_from((0, 0, 250, 1_000, 60_000)))
def test_pipeline_and_sweeper_agree_with_the_reference_model(steps: list[Step], replay_delay_ms: int) -> None:
    Harness(replay_delay_ms).run(steps)


@settings(PROPERTY_SETTINGS, max_examples=60)
@given(scenarios(), st.sampled_from(OTHER_WINDOWS))
def test_other_window_lengths_agree_with_the_reference_model(steps: list[Step], windows: Windows) -> None:
    Harness(windows=windows).run(steps)


@settings(PROPERTY_SETTINGS, max_examples=100)
@given(scenarios(crashes=True))
def test_a_sweeper_that_dies_after_claiming_delays_reports_but_loses_none(steps: list[Step]) -> None:
    Harness(crashes=True).run(steps)


def test_replay_at_a_later_clock_changes_only_failed_at_of_invalid_input() -> None:
    """Documented behaviour (README, Delivery guarantees): dead letters of invalid input are not
    journaled, so a replay re-stamps failedAt; everything else, the source coordinates included, is
    identical. Under exactly_once only the committed attempt is visible to read_committed readers."""
    harness = Harness()
    sources, _ = harness.sources_for([Send(0, None, b"\xff\xff garbage")])
    first = harness.processor.process(sources)
    harness.now_ms += 1_000
    again = harness.processor.process(sources)
    before, after = (harness.project(o) for o in (first.outputs[0], again.outputs[0]))
    assert isinstance(before, DeadLetter) and isinstance(after, DeadLetter)
    assert replace(after, failed_at=before.failed_at) == before
    assert after.failed_at == before.failed_at + 1_000


def test_scenarios_reach_every_outcome() -> None:
    """Guard against a generator that never produces the cases the properties are about."""
    seen: Counter[str] = Counter()

    @settings(max_examples=60, deadline=None, database=None, derandomize=True)
    @given(scenarios())
    def collect(steps: list[Step]) -> None:
        harness = Harness()
        harness.run(steps)
        seen.update(harness.stored)
        seen.update(harness.outcomes)

    collect()
    wanted = [
        "pending",
        "held",
        "pending_joined",
        "held_joined",
        *(f"unlinked:{r.value}" for r in UnlinkedReason),
        *(f"duplicate:{k.value}" for k in DuplicateKind),
        *(f"dead_letter:{r.value}" for r in DeadLetterReason),
        *(f"attributed:{m.value}" for m in Mode),
    ]
    assert [w for w in wanted if not seen[w]] == []
