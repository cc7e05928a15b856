"""The state of one customer (cid), as the attribution rules see it. Pure data, no I/O.

Every time here is an arrival time: the Kafka timestamp of the input record behind it (contract
rule 8), except a lease, which is on the shared clock (Redis's). Items past their deadline are kept
until the expiry sweeper has reported them (contract rules 4 and 5); the rules ignore them, so an
expired lead can never be joined late, and so do they an item a sweeper has claimed. States have
no TTL in Redis: the sweeper deletes a state once nothing is left in it, at its wake time
(wake_ms), so an expired item is reported however long the consumers were down.

States and items are never changed once built, though not declared frozen (see consumer/model.py):
the rules build new ones, and the pipeline tells a changed state by identity and equality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final


@dataclass(slots=True, init=False)
class PendingLead:
    """A deferred Event 1 waiting for its verification (rule 2)."""

    click_id: str
    event_name: str
    customer_name: str | None
    customer_email: str | None
    customer_avatar: str | None
    metadata: Mapping[str, str] | None
    event_timestamp_ms: int | None
    created_ms: int
    deadline_ms: int
    lease_until_ms: int  # >0 while an expiry sweeper has claimed it for reporting

    def __init__(
        self,
        click_id: str,
        event_name: str,
        customer_name: str | None,
        customer_email: str | None,
        customer_avatar: str | None,
        metadata: Mapping[str, str] | None,
        event_timestamp_ms: int | None,
        created_ms: int,
        deadline_ms: int,
        lease_until_ms: int = 0,
    ) -> None:
        self.click_id = click_id
        self.event_name = event_name
        self.customer_name = customer_name
        self.customer_email = customer_email
        self.customer_avatar = customer_avatar
        self.metadata = metadata
        self.event_timestamp_ms = event_timestamp_ms
        self.created_ms = created_ms
        self.deadline_ms = deadline_ms
        self.lease_until_ms = lease_until_ms

    @property
    def due_ms(self) -> int:
        return max(self.deadline_ms, self.lease_until_ms)


@dataclass(slots=True, init=False)
class HeldVerification:
    """An Event 2 that arrived before (or without) its Event 1, held for the grace period (rule 4)."""

    event_name: str
    customer_name: str | None
    customer_email: str | None
    customer_avatar: str | None
    metadata: Mapping[str, str] | None
    verified_timestamp_ms: int | None
    created_ms: int
    deadline_ms: int
    lease_until_ms: int

    def __init__(
        self,
        event_name: str,
        customer_name: str | None,
        customer_email: str | None,
        customer_avatar: str | None,
        metadata: Mapping[str, str] | None,
        verified_timestamp_ms: int | None,
        created_ms: int,
        deadline_ms: int,
        lease_until_ms: int = 0,
    ) -> None:
        self.event_name = event_name
        self.customer_name = customer_name
        self.customer_email = customer_email
        self.customer_avatar = customer_avatar
        self.metadata = metadata
        self.verified_timestamp_ms = verified_timestamp_ms
        self.created_ms = created_ms
        self.deadline_ms = deadline_ms
        self.lease_until_ms = lease_until_ms

    @property
    def due_ms(self) -> int:
        return max(self.deadline_ms, self.lease_until_ms)


Item = PendingLead | HeldVerification


@dataclass(slots=True, init=False)
class CustomerState:
    # consumer/rules/attribute.py builds new states field by field (dataclasses.replace cost ~3 % of the
    # consumer's CPU): a field added here must be passed there too.
    pending: tuple[PendingLead, ...]
    held: tuple[HeldVerification, ...]
    done: Mapping[str, int]  # eventName -> dedupe expiry (ms)
    verified_until_ms: int  # Event 2s before this instant are duplicates (rule 3)

    def __init__(
        self,
        pending: tuple[PendingLead, ...] = (),
        held: tuple[HeldVerification, ...] = (),
        done: Mapping[str, int] | None = None,
        verified_until_ms: int = 0,
    ) -> None:
        self.pending = pending
        self.held = held
        self.done = {} if done is None else done
        self.verified_until_ms = verified_until_ms

    def active_pending(self, at_ms: int) -> PendingLead | None:
        """The pending lead an event that reached Kafka at ``at_ms`` meets: before its deadline and
        not claimed by a sweeper (a claimed item is being reported as expired)."""
        for p in self.pending:
            if p.deadline_ms > at_ms and not p.lease_until_ms:
                return p
        return None

    def active_held(self, at_ms: int) -> HeldVerification | None:
        for h in self.held:
            if h.deadline_ms > at_ms and not h.lease_until_ms:
                return h
        return None

    def is_done(self, event_name: str, at_ms: int) -> bool:
        return self.done.get(event_name, 0) > at_ms

    def items(self) -> tuple[Item, ...]:
        return (*self.pending, *self.held)

    def pruned(self, at_ms: int) -> CustomerState:
        """Forget dedupe marks whose window has passed, so state never grows without bound."""
        if all(until > at_ms for until in self.done.values()) and (
            self.verified_until_ms > at_ms or not self.verified_until_ms
        ):
            return self  # nothing to forget (nearly always): no copy
        done = {name: until for name, until in self.done.items() if until > at_ms}
        verified = self.verified_until_ms if self.verified_until_ms > at_ms else 0
        if len(done) == len(self.done) and verified == self.verified_until_ms:
            return self
        return replace(self, done=done, verified_until_ms=verified)

    def is_empty(self) -> bool:
        return not (self.pending or self.held or self.done or self.verified_until_ms)

    def wake_ms(self) -> int | None:
        """When the expiry sweeper must next look at this customer: when its first item falls due
        or, with no item left, when its last dedupe mark lapses and the state can be deleted.
        None for an empty state (it is not stored)."""
        if self.pending or self.held:
            # Plain loops over the two tuples: this runs twice for every state written
            # (consumer/state/transition.py), and compiled, a generator over a tuple built for the
            # call cost more than the comparisons (0.6 vs 0.2 us).
            first = self.pending[0].due_ms if self.pending else self.held[0].due_ms
            return _earliest_due(self.held, _earliest_due(self.pending, first))
        if self.done or self.verified_until_ms:
            latest = self.verified_until_ms  # max(max(self.done.values(), default=0), verified), in a loop
            for until in self.done.values():
                latest = max(latest, until)
            return latest if self.done else max(latest, 0)
        return None


def _earliest_due(items: Sequence[Item], wake: int) -> int:
    for item in items:
        wake = min(wake, item.due_ms)
    return wake


EMPTY: Final = CustomerState()


PartitionKey = tuple[str, int]  # (topic, partition) of input records


@dataclass(slots=True, init=False)
class Write:
    """Replace one customer's state if it is still ``old_blob`` (compare-and-set): what the
    pipeline and the sweeper ask of the store (consumer/state/store.py), one per customer."""

    cid: str
    old_blob: bytes | None
    new_blob: bytes | None  # None deletes the key
    wake_ms: int | None  # add a wake entry for this instant (the state's new wake time)
    journal: Mapping[PartitionKey, bytes]  # framed journal entries per input partition
    pending_delta: int
    held_delta: int

    def __init__(
        self,
        cid: str,
        old_blob: bytes | None,
        new_blob: bytes | None,
        wake_ms: int | None = None,
        journal: Mapping[PartitionKey, bytes] | None = None,
        pending_delta: int = 0,
        held_delta: int = 0,
    ) -> None:
        self.cid = cid
        self.old_blob = old_blob
        self.new_blob = new_blob
        self.wake_ms = wake_ms
        self.journal = {} if journal is None else journal
        self.pending_delta = pending_delta
        self.held_delta = held_delta
