"""The expiry sweeper: turns passed deadlines into unlinked records (contract rules 4 and 5), and
deletes states once nothing is left in them (they have no TTL).

It does not rely on Redis keyspace notifications, which are fire-and-forget and lost while no
consumer listens. Every stored state has an entry in the wake index (its cid in the list of the
second of CustomerState.wake_ms), so deadlines survive restarts and any instance may sweep them.

Deadlines are arrival times (contract rule 8), and one falls due only once the watermark has
passed it: the lowest of the input partitions' marks, each how far its records have been processed
and committed (a caught-up, idle partition's mark follows the shared clock; watermark.lua). So a
consumer outage, or a partition that lags the others, never reports a lead whose verification
reached Kafka in time: the backlog is processed first. Leases are on the shared clock, Redis's, as
every instance sees it. Protocol, per round:

  Step 1. Read the watermark, the clock and the wake entries of the seconds up to the watermark
          (one round trip).
  Step 2. Read those customers' states; for each due item, *claim* it with a lease by
          compare-and-set (the lease moves the state's wake time, so the write adds the entry
          that will bring the item back if nobody releases it). Only one instance can win a
          claim, so no expiry is reported twice while its claimant is alive. A state with no item
          and no live dedupe mark is deleted, by compare-and-set too. Entries are acknowledged
          (removed) once their customer needs nothing more from them: handled, or an entry left
          behind when the state's wake time moved. An entry whose state is not due yet, but within
          the entry's second, stays; so does one whose write lost a compare-and-set.
  Step 3. The caller publishes the unlinked records (in a transaction under exactly_once) ...
  Step 4. ... and only then do we *release* the items (remove them from the state). If the
          claimant dies between 3 and 4, the lease runs out and another instance reports the
          item again: at least once, with a stable leadId for readers to deduplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from consumer.model import UnlinkedLead
from consumer.processing.quarantine import readable
from consumer.rules.attribute import claim, due_items, release, unlinked
from consumer.state.codec import CorruptState
from consumer.state.customer import Item, PartitionKey, Write
from consumer.state.keys import wake_second
from consumer.state.store import LEGACY, StateStore
from consumer.state.transition import plan_write

SWEEP_LIMIT = 500  # index members per round: bounds the work done between two input batches
MAX_RELEASE_TRIES = 20


@dataclass(slots=True)
class Claimed:
    leads: list[UnlinkedLead] = field(default_factory=list)
    items: dict[str, list[Item]] = field(default_factory=dict)
    more: bool = False  # the round hit SWEEP_LIMIT: sweep again soon
    watermark_ms: int | None = None  # as read in Step 1 (None: a partition has no mark yet)
    now_ms: int = 0  # the shared clock, as read in Step 1


class ExpirySweeper:
    def __init__(self, store: StateStore, lease_ms: int) -> None:
        self._store = store
        self._lease_ms = lease_ms

    def claim_due(self, partitions: Sequence[PartitionKey]) -> Claimed:
        """Steps 1 and 2; ``partitions``: every partition of the input topic (the watermark is
        their lowest mark)."""
        due = self._store.due(SWEEP_LIMIT, partitions)  # Step 1
        claimed = Claimed(watermark_ms=due.watermark_ms, now_ms=due.now_ms)
        wakes, watermark_ms, now_ms = due.wakes, due.watermark_ms, due.now_ms
        if not wakes or watermark_ms is None:
            return claimed
        cids = {cid for wake in wakes for cid in wake.cids}
        states = self._store.read(cids, {}).states  # Step 2
        writes: list[Write] = []
        chosen: dict[str, list[Item]] = {}
        wake_of: dict[str, int | None] = {}  # the state's wake time, for the entries not due yet
        for cid, blob in states.items():
            state = readable(self._store, cid, blob, "sweeper")
            if isinstance(state, CorruptState):  # kept aside: delete it, and the entry goes
                assert blob is not None
                writes.append(Write(cid, blob, None))
                chosen[cid] = []
                continue
            items = due_items(state, watermark_ms, now_ms)
            if items:
                new = claim(state, items, now_ms + self._lease_ms)
            else:
                new = state.pruned(watermark_ms)
                if not new.is_empty():  # nothing due: leave the state alone
                    wake_of[cid] = state.wake_ms()
                    continue
            write = plan_write(cid, blob, state, new, {})
            if write is not None:
                writes.append(write)
                chosen[cid] = items
        failed: set[str] = set()
        for write, ok in zip(writes, self._store.write(writes), strict=True):
            if not ok:  # a lost compare-and-set: another instance claimed first, or a batch wrote
                failed.add(write.cid)
            elif chosen[write.cid]:
                claimed.items[write.cid] = chosen[write.cid]
                claimed.leads.extend(unlinked(write.cid, item, now_ms) for item in chosen[write.cid])
        kept = False
        for wake in wakes:
            handled = 0
            for cid in wake.cids:
                if cid in failed or _not_yet(wake.second, wake_of.get(cid), watermark_ms):
                    kept = True  # acks remove a list's head only: this entry and the rest wait
                    break
                handled += 1
            self._store.ack(wake, handled)
        # A full round with every entry handled: more may be due, sweep again at once. (Most
        # entries are ones a moved wake time left behind; a pause after each round of them would
        # cap the sweeper far below the rate of incoming leads.) An entry kept needs time instead.
        claimed.more = sum(len(w.cids) for w in wakes) >= SWEEP_LIMIT and not kept
        return claimed

    def release(self, claimed: Claimed) -> None:
        """Step 4: forget reported items. Retries compare-and-set conflicts with fresh reads."""
        todo = dict(claimed.items)
        watermark_ms = claimed.watermark_ms or 0
        for _ in range(MAX_RELEASE_TRIES):
            if not todo:
                return
            states = self._store.read(todo.keys(), {}).states
            writes = []
            for cid, items in todo.items():
                state = readable(self._store, cid, states[cid], "sweeper")
                if isinstance(state, CorruptState):  # went bad since the claim: nothing to release
                    continue
                # Pruned too: a state with nothing else left is deleted now, not at a wake entry
                # for a dedupe mark that has already lapsed.
                write = plan_write(cid, states[cid], state, release(state, items).pruned(watermark_ms), {})
                if write is not None:
                    writes.append(write)
            applied = self._store.write(writes)
            todo = {w.cid: todo[w.cid] for w, ok in zip(writes, applied, strict=True) if not ok}
        # Still conflicting: the lease will lapse and the items be reported again (at least once).


def _not_yet(second: int, wake_ms: int | None, watermark_ms: int) -> bool:
    """The entry may be the one for a wake time still ahead within its second: keep it. An entry
    of another second than the state's wake time was left behind when that time moved, and a
    member of the old index (due by the time it is read) by an item since claimed or gone."""
    if wake_ms is None or wake_ms <= watermark_ms or second == LEGACY:
        return False
    return wake_second(wake_ms) == second
