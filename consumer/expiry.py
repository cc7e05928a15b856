"""The expiry sweeper: turns passed deadlines into unlinked records (contract rules 4 and 5).

It does not rely on Redis keyspace notifications, which are fire-and-forget and lost while no
consumer listens. Deadlines live in a sorted set in Redis, so they survive restarts, and any
instance may sweep them. Protocol, per round:

  Step 1. Read the index members whose due time has passed (one round trip).
  Step 2. Read those customers' states; for each due item, *claim* it with a lease by
          compare-and-set. Only one instance can win a claim, so no expiry is reported twice
          while its claimant is alive.
  Step 3. The caller publishes the unlinked records (in a transaction under exactly_once) ...
  Step 4. ... and only then do we *release* the items (remove them from the state and index).
          If the claimant dies between 3 and 4, the lease runs out and another instance reports
          the item again: at least once, with a stable leadId for readers to deduplicate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from consumer.attribute import claim, due_items, release, unlinked
from consumer.model import UnlinkedLead
from consumer.state.codec import decode_state
from consumer.state.model import Item
from consumer.state.store import StateStore, Write, member_cid
from consumer.state.transition import plan_write

SWEEP_LIMIT = 500  # index members per round: bounds the work done between two input batches
MAX_RELEASE_TRIES = 20


@dataclass(slots=True)
class Claimed:
    leads: list[UnlinkedLead] = field(default_factory=list)
    items: dict[str, list[Item]] = field(default_factory=dict)
    more: bool = False  # the round hit SWEEP_LIMIT: sweep again soon


class ExpirySweeper:
    def __init__(self, store: StateStore, lease_ms: int, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._lease_ms = lease_ms
        self._clock = clock

    def claim_due(self) -> Claimed:
        now_ms = int(self._clock() * 1000)
        members = self._store.due(now_ms, SWEEP_LIMIT)  # Step 1
        claimed = Claimed(more=len(members) >= SWEEP_LIMIT)
        if not members:
            return claimed
        by_cid: dict[str, list[str]] = {}
        for member in members:
            by_cid.setdefault(member_cid(member), []).append(member)
        states = self._store.read(by_cid.keys(), {}).states  # Step 2
        writes: list[Write] = []
        chosen: dict[str, list[Item]] = {}
        for cid, blob in states.items():
            state = decode_state(blob)
            items = due_items(state, now_ms)
            live = {f"{item.due_ms}:{cid}" for item in state.items()}
            stale = [m for m in by_cid[cid] if m not in live]
            if stale:
                # The item was joined, released or re-leased since the member was written.
                self._store.drop_index(stale)
            if not items:
                continue
            write = plan_write(cid, blob, state, claim(state, items, now_ms + self._lease_ms), {})
            if write is not None:
                writes.append(write)
                chosen[cid] = items
        for write, ok in zip(writes, self._store.write(writes), strict=True):
            if ok:  # a lost compare-and-set means another instance claimed it first
                claimed.items[write.cid] = chosen[write.cid]
                claimed.leads.extend(unlinked(write.cid, item, now_ms) for item in chosen[write.cid])
        return claimed

    def release(self, claimed: Claimed) -> None:
        """Step 4: forget reported items. Retries compare-and-set conflicts with fresh reads."""
        todo = dict(claimed.items)
        for _ in range(MAX_RELEASE_TRIES):
            if not todo:
                return
            states = self._store.read(todo.keys(), {}).states
            writes = []
            for cid, items in todo.items():
                state = decode_state(states[cid])
                write = plan_write(cid, states[cid], state, release(state, items), {})
                if write is not None:
                    writes.append(write)
            applied = self._store.write(writes)
            todo = {w.cid: todo[w.cid] for w, ok in zip(writes, applied, strict=True) if not ok}
        # Still conflicting: the lease will lapse and the items be reported again (at least once).
