"""A small reference model of contract section 3, for the property tests in test_properties.py.

Written from the contract and the README's documented choices, deliberately without code from
consumer/rules/attribute.py, consumer/state/ or consumer/rules/validate.py: only ``lead_id`` and the reason
enums are shared, because they *are* the contract's vocabulary. Everything is kept in memory and
plainly: one ``Customer`` per cid, a list of pending leads, a list of held Event 2s, a dict of
done marks. Reported (expired) items are deleted from the lists.

Documented choices the model follows where the contract is silent:
- windows run on each record's arrival time (its Kafka timestamp); outputs are stamped with the
  clock of the batch (``now``); a sweep reports what the watermark has passed;
- a pending lead / held Event 2 whose deadline has passed (deadline <= now) is inactive for the
  rules even if the sweeper has not reported it yet; a sweep reports it exactly once;
- an Event 2 while another Event 2 is held, or while the customer was verified within the dedupe
  window, is a duplicate of kind ``verification``;
- a deferred Event 1 that finds a held Event 2 is attributed at once and marks done + verified;
- an Event 2 that joins a pending lead marks done(cid, Event 1 name) and verified;
- unlinked records have ``lead_id(cid, clickId or None, eventName, f"{reason}:{deadline}")``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumer.model import lead_id
from consumer.reasons import DeadLetterReason, DuplicateKind, Mode, UnlinkedReason

# The only timestamps the tests send, with their epoch milliseconds worked out by hand.
VALID_TIMESTAMPS: Mapping[str, int] = {
    "2024-01-01T00:00:00Z": 1_704_067_200_000,
    "2024-01-01T02:00:00+02:00": 1_704_067_200_000,
    "2023-06-15T12:30:00.500+00:00": 1_686_832_200_500,
}
# Likewise the only email addresses and avatar URLs the tests consider valid.
VALID_EMAILS = frozenset({"ann@example.com", "bob.b+leads@mail.example.org"})
VALID_AVATARS = frozenset({"https://img.example.com/a.png", "http://cdn.example.net/b"})

Metadata = tuple[tuple[str, str], ...] | None


def freeze_metadata(value: Mapping[str, str] | None) -> Metadata:
    return None if value is None else tuple(sorted(value.items()))


@dataclass(frozen=True, slots=True)
class Input:
    """One input record: a dict to be Avro-encoded, or raw bytes that are not a LeadEvent."""

    partition: int
    offset: int
    key: bytes | None
    payload: Mapping[str, Any] | bytes
    arrival: int  # when it reached Kafka (the record's timestamp): every window runs on it


@dataclass(frozen=True, slots=True)
class Attributed:
    lead_id: str
    cid: str
    click_id: str
    event_name: str
    mode: str
    verification_event_name: str | None
    customer_name: str | None
    customer_email: str | None
    customer_avatar: str | None
    metadata: Metadata
    event_timestamp: int | None
    verified_timestamp: int | None
    attributed_at: int


@dataclass(frozen=True, slots=True)
class Unlinked:
    lead_id: str
    cid: str
    reason: str
    event_name: str
    click_id: str | None
    customer_name: str | None
    customer_email: str | None
    customer_avatar: str | None
    metadata: Metadata
    event_timestamp: int | None
    detected_at: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    partition: int
    offset: int
    key: bytes | None
    failed_at: int


Record = Attributed | Unlinked | DeadLetter


@dataclass(frozen=True, slots=True)
class Event:
    """A valid lead event, clickId "" already read as absent."""

    cid: str
    name: str
    click_id: str | None
    deferred: bool
    timestamp: int | None
    customer_name: str | None
    customer_email: str | None
    customer_avatar: str | None
    metadata: Metadata


@dataclass(slots=True, eq=False)  # compared by identity: list.remove must take this very item
class Waiting:
    """A pending Event 1 (click_id set) or a held Event 2 (click_id None)."""

    event: Event
    deadline: int


@dataclass(slots=True)
class Customer:
    pending: list[Waiting] = field(default_factory=list)
    held: list[Waiting] = field(default_factory=list)
    done_until: dict[str, int] = field(default_factory=dict)
    verified_until: int = 0


@dataclass(slots=True)
class BatchOutcome:
    records: list[Record] = field(default_factory=list)
    duplicates: Counter[DuplicateKind] = field(default_factory=Counter)


def _too_long(value: Any, low: int, high: int) -> bool:
    if value is None:
        return low > 0
    return not (isinstance(value, str) and low <= len(value) <= high)


def classify(payload: Mapping[str, Any] | bytes) -> Event | DeadLetterReason:
    """Section 2 for the values the tests generate."""
    if isinstance(payload, bytes):
        return DeadLetterReason.UNDECODABLE
    limits = {
        "customerExternalId": (1, 100),
        "eventName": (1, 255),
        "clickId": (0, 100),
        "customerName": (0, 100),
        "customerEmail": (0, 100),
        "customerAvatar": (0, 2048),
    }
    if any(_too_long(payload.get(name), low, high) for name, (low, high) in limits.items()):
        return DeadLetterReason.INVALID_FIELD
    mode = payload.get("mode")
    if mode not in (None, "deferred"):
        return DeadLetterReason.INVALID_MODE
    timestamp = payload.get("timestamp")
    email = payload.get("customerEmail")
    avatar = payload.get("customerAvatar")
    metadata: Mapping[str, str] | None = payload.get("metadata")
    if (
        (timestamp is not None and timestamp not in VALID_TIMESTAMPS)
        or (email is not None and email not in VALID_EMAILS)
        or (avatar is not None and avatar not in VALID_AVATARS)
        or (metadata is not None and sum(len(k) + len(v) for k, v in metadata.items()) > 10_000)
    ):
        return DeadLetterReason.INVALID_FIELD
    click_id = payload.get("clickId") or None
    if mode == "deferred" and click_id is None:
        return DeadLetterReason.MISSING_CLICK_ID
    return Event(
        cid=payload["customerExternalId"],
        name=payload["eventName"],
        click_id=click_id,
        deferred=mode == "deferred",
        timestamp=None if timestamp is None else VALID_TIMESTAMPS[timestamp],
        customer_name=payload.get("customerName"),
        customer_email=email,
        customer_avatar=avatar,
        metadata=freeze_metadata(metadata),
    )


def _active(items: list[Waiting], now: int) -> Waiting | None:
    for item in items:
        if item.deadline > now:
            return item
    return None


def _deferred_lead(event1: Event, event2: Event, now: int) -> Attributed:
    assert event1.click_id is not None
    return Attributed(
        lead_id=lead_id(event1.cid, event1.click_id, event1.name),
        cid=event1.cid,
        click_id=event1.click_id,
        event_name=event1.name,
        mode=Mode.DEFERRED.value,
        verification_event_name=event2.name,
        customer_name=event1.customer_name,
        customer_email=event1.customer_email,
        customer_avatar=event1.customer_avatar,
        metadata=event1.metadata,
        event_timestamp=event1.timestamp,
        verified_timestamp=event2.timestamp,
        attributed_at=now,
    )


class ReferenceModel:
    def __init__(self, pending_ttl_ms: int, orphan_grace_ms: int, dedupe_ttl_ms: int) -> None:
        self.pending_ttl_ms = pending_ttl_ms
        self.orphan_grace_ms = orphan_grace_ms
        self.dedupe_ttl_ms = dedupe_ttl_ms
        self.customers: dict[str, Customer] = {}

    def batch(self, now: int, inputs: Sequence[Input]) -> BatchOutcome:
        outcome = BatchOutcome()
        for record in inputs:
            event = classify(record.payload)
            if isinstance(event, DeadLetterReason):
                outcome.records.append(
                    DeadLetter(event.value, record.partition, record.offset, record.key, now)
                )
                continue
            result = self._apply(self.customers.setdefault(event.cid, Customer()), event, record.arrival, now)
            if isinstance(result, DuplicateKind):
                outcome.duplicates[result] += 1
            elif isinstance(result, DeadLetterReason):
                outcome.records.append(
                    DeadLetter(result.value, record.partition, record.offset, record.key, now)
                )
            elif result is not None:
                outcome.records.append(result)
        return outcome

    def _apply(
        self, customer: Customer, event: Event, at: int, now: int
    ) -> Attributed | DuplicateKind | DeadLetterReason | None:
        """One event that reached Kafka ``at``, decided (stamped) ``now``."""
        pending = _active(customer.pending, at)
        held = _active(customer.held, at)
        done = customer.done_until.get(event.name, 0) > at

        if event.click_id is None:  # rules 3 and 4: a verification event
            if pending is not None:
                customer.pending.remove(pending)
                self._mark_verified(customer, pending.event.name, at)
                return _deferred_lead(pending.event, event, now)
            if customer.verified_until > at or held is not None:
                return DuplicateKind.VERIFICATION
            customer.held.append(Waiting(event, at + self.orphan_grace_ms))
            return None

        if event.deferred:  # rule 2
            if pending is not None:
                same = pending.event.click_id == event.click_id and pending.event.name == event.name
                return DuplicateKind.DEFERRED_EVENT1 if same else DeadLetterReason.DUPLICATE_ATTRIBUTION
            if done:
                return DuplicateKind.DEFERRED_EVENT1
            if held is not None:
                customer.held.remove(held)
                self._mark_verified(customer, event.name, at)
                return _deferred_lead(event, held.event, now)
            customer.pending.append(Waiting(event, at + self.pending_ttl_ms))
            return None

        # rule 1: a direct lead
        if pending is not None:
            return DeadLetterReason.DUPLICATE_ATTRIBUTION
        if done:
            return DuplicateKind.DIRECT
        customer.done_until[event.name] = at + self.dedupe_ttl_ms
        return Attributed(
            lead_id=lead_id(event.cid, event.click_id, event.name),
            cid=event.cid,
            click_id=event.click_id,
            event_name=event.name,
            mode=Mode.DIRECT.value,
            verification_event_name=None,
            customer_name=event.customer_name,
            customer_email=event.customer_email,
            customer_avatar=event.customer_avatar,
            metadata=event.metadata,
            event_timestamp=event.timestamp,
            verified_timestamp=None,
            attributed_at=now,
        )

    def _mark_verified(self, customer: Customer, event1_name: str, at: int) -> None:
        customer.done_until[event1_name] = at + self.dedupe_ttl_ms
        customer.verified_until = at + self.dedupe_ttl_ms

    def sweep(self, watermark: int, now: int) -> list[Unlinked]:
        """Rules 4 and 5: report every item whose deadline the watermark has passed (every input
        partition processed past it), once, stamped ``now``, and forget it."""
        reported: list[Unlinked] = []
        for cid, customer in self.customers.items():
            for items, reason in (
                (customer.pending, UnlinkedReason.VERIFICATION_EXPIRED),
                (customer.held, UnlinkedReason.NO_MATCHING_EVENT1),
            ):
                for item in [i for i in items if i.deadline <= watermark]:
                    items.remove(item)
                    event = item.event
                    reported.append(
                        Unlinked(
                            lead_id=lead_id(
                                cid, event.click_id, event.name, f"{reason.value}:{item.deadline}"
                            ),
                            cid=cid,
                            reason=reason.value,
                            event_name=event.name,
                            click_id=event.click_id,
                            customer_name=event.customer_name,
                            customer_email=event.customer_email,
                            customer_avatar=event.customer_avatar,
                            metadata=event.metadata,
                            event_timestamp=event.timestamp,
                            detected_at=now,
                        )
                    )
        return reported

    def outstanding(self) -> tuple[int, int]:
        """(pending leads, held Event 2s) not yet reported, expired or not."""
        customers = self.customers.values()
        return sum(len(c.pending) for c in customers), sum(len(c.held) for c in customers)

    def deadlines(self) -> list[int]:
        """Every instant at which a rule's outcome may change: deadlines and dedupe expiries."""
        found: list[int] = []
        for customer in self.customers.values():
            found += [w.deadline for w in (*customer.pending, *customer.held)]
            found += [*customer.done_until.values(), customer.verified_until]
        return found
