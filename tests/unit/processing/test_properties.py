"""Property tests: the real BatchProcessor + ExpirySweeper + InMemoryStore against a reference model.

Hypothesis generates interleavings for three customers ("c1", "C1" and "c1 " are three different
customers: cids compare exactly) of direct leads, deferred Event 1s, Event 2s, exact duplicates,
`clickId: ""`, bad records and clock advances across the grace period, the pending TTL and the
dedupe window, in batches of random sizes on two partitions. Every output is decoded with
fastavro against the bundled schemas and compared with tests/unit/reference_model.py.

Properties:
- model: per batch, the multiset of published records and the duplicate counts by kind; per sweep
  (a clock advance, the partitions marked caught up, then claim_due/release until nothing is
  claimed), the unlinked records;
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

from collections import Counter
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.reasons import DeadLetterReason, DuplicateKind, Mode, UnlinkedReason
from consumer.rules.attribute import Windows
from tests.unit.processing.property_harness import Harness
from tests.unit.processing.reference_model import (
    DeadLetter,
)
from tests.unit.processing.scenarios import (
    OTHER_WINDOWS,
    PROPERTY_SETTINGS,
    Send,
    Step,
    scenarios,
)

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
        # corrupt_state needs a damaged blob in the store (tests/unit/processing/test_quarantine.py),
        # state_limit thousands of events of one customer (tests/unit/processing/test_state_limit.py)
        *(
            f"dead_letter:{r.value}"
            for r in DeadLetterReason
            if r not in (DeadLetterReason.CORRUPT_STATE, DeadLetterReason.STATE_LIMIT)
        ),
        *(f"attributed:{m.value}" for m in Mode),
    ]
    assert [w for w in wanted if not seen[w]] == []
