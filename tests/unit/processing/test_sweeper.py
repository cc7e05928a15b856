"""The expiry sweeper's use of the wake index, where the property tests do not reach: its own
compare-and-set losing to a batch, entries not due yet within their second, and stale entries."""

from __future__ import annotations

from consumer.processing.sweeper import SWEEP_LIMIT, Claimed, ExpirySweeper
from consumer.state.codec import decode_state
from consumer.state.customer import CustomerState, PendingLead
from consumer.state.keys import wake_second
from consumer.state.memory import InMemoryStore
from consumer.state.transition import plan_write
from tests.support.stores import InterleavingStore

T0 = 1_800_000_000_000  # a whole second
LEASE_MS = 30_000


PARTITION = ("leads.raw", 0)


class Clock:
    """The shared clock; the input partition is caught up, so the watermark follows it."""

    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> float:
        return self.ms / 1000


def sweep(sweeper: ExpirySweeper, store: InMemoryStore) -> Claimed:
    store.mark_partitions({PARTITION: (-1, True)}, 0)
    return sweeper.claim_due([PARTITION])


def pending(deadline_ms: int, click: str = "click-1") -> PendingLead:
    return PendingLead(click, "signup", None, None, None, None, None, T0 - 1000, deadline_ms)


def store_state(store: InMemoryStore, cid: str, new: CustomerState) -> None:
    blob = store.states.get(cid)
    write = plan_write(cid, blob, decode_state(blob), new, {})
    assert write is not None and store.write([write]) == [True]


def test_a_claim_lost_to_a_batch_keeps_the_entry() -> None:
    clock = Clock()
    store = InterleavingStore(clock)
    sweeper = ExpirySweeper(store, LEASE_MS)
    store_state(store, "c1", CustomerState(pending=(pending(T0 + 100),)))
    clock.ms = T0 + 2000

    def batch_adds_a_dedupe_mark() -> None:  # the wake time stays the pending lead's deadline
        state = decode_state(store.states["c1"])
        store_state(store, "c1", CustomerState(state.pending, state.held, {"demo": T0 + 60_000}))

    store.before_next_write = batch_adds_a_dedupe_mark
    assert not sweep(sweeper, store).leads  # compare-and-set lost: nothing claimed ...
    assert (wake_second(T0 + 100), "c1") in store.wake_entries()  # ... and the entry kept
    assert [lead.customer_external_id for lead in sweep(sweeper, store).leads] == ["c1"]


def test_an_entry_not_due_yet_within_its_second_stays() -> None:
    clock = Clock()
    store = InMemoryStore(clock)
    sweeper = ExpirySweeper(store, LEASE_MS)
    store_state(store, "c1", CustomerState(pending=(pending(T0 + 900),)))
    store_state(store, "c2", CustomerState(pending=(pending(T0 + 100, "click-2"),)))
    clock.ms = T0 + 500  # the second of both has come; only c2 is due
    assert [lead.customer_external_id for lead in sweep(sweeper, store).leads] == ["c2"]
    assert (wake_second(T0), "c1") in store.wake_entries()
    clock.ms = T0 + 900
    assert [lead.customer_external_id for lead in sweep(sweeper, store).leads] == ["c1"]


def test_entries_left_behind_by_a_moved_wake_time_are_dropped_and_states_deleted() -> None:
    clock = Clock()
    store = InMemoryStore(clock)
    sweeper = ExpirySweeper(store, LEASE_MS)
    store_state(store, "c1", CustomerState(pending=(pending(T0 + 100),)))
    # Joined by a batch: no item left, a dedupe mark until T0 + 60 s; the old entry stays behind.
    store_state(store, "c1", CustomerState(done={"signup": T0 + 60_000}))
    assert store.wake_entries() == {(wake_second(T0 + 100), "c1"), (wake_second(T0 + 60_000), "c1")}
    clock.ms = T0 + 1000
    assert not sweep(sweeper, store).leads
    assert store.wake_entries() == {(wake_second(T0 + 60_000), "c1")}  # the stale one is gone
    assert "c1" in store.states
    clock.ms = T0 + 60_000
    assert not sweep(sweeper, store).leads
    assert (store.states, store.wakes) == ({}, {})  # the mark lapsed: state deleted, index empty


def test_a_full_round_of_entries_left_behind_asks_for_another_round_at_once() -> None:
    """Most entries a sweeper meets were left behind by joined leads: a pause after each round of
    them would cap the sweeper at SWEEP_LIMIT entries per interval, below the rate of leads."""
    clock = Clock()
    store = InMemoryStore(clock)
    sweeper = ExpirySweeper(store, LEASE_MS)
    for i in range(2 * SWEEP_LIMIT):
        cid = f"c{i}"
        store_state(store, cid, CustomerState(pending=(pending(T0 + 100),)))
        store_state(store, cid, CustomerState(done={"signup": T0 + 60_000}))  # joined
    clock.ms = T0 + 1000
    claimed = sweep(sweeper, store)
    assert claimed.more and not claimed.leads
    rounds = 1
    while sweep(sweeper, store).more:
        rounds += 1
    assert rounds == 2  # the second round takes the other half (and, full too, asks for a third)
    assert {second for second, _ in store.wake_entries()} == {wake_second(T0 + 60_000)}


def test_a_kept_entry_means_wait() -> None:
    clock = Clock()
    store = InMemoryStore(clock)
    sweeper = ExpirySweeper(store, LEASE_MS)
    for i in range(SWEEP_LIMIT):
        store_state(store, f"c{i}", CustomerState(pending=(pending(T0 + 900),)))
    clock.ms = T0 + 500  # their second has come, their deadline not yet
    assert not sweep(sweeper, store).more
