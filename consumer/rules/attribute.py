"""The attribution rules of contract section 3, as a pure function of (state, event, times).

Two times go in: ``at_ms``, when the event reached Kafka (its input record's timestamp), which
every window runs on (contract rule 8: the TTL, the grace period and the dedupe window), and
``now_ms``, the shared clock's time of the decision, which only stamps the outputs
(``attributedAt``, ``failedAt``). So a decision depends on the input alone: processing the same
records later (after an outage), or on an instance whose clock is off, decides the same.

No I/O here: the Redis store hands in a snapshot and writes back what this returns, so every
rule is unit-tested without a server and the same code runs in production.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from consumer.model import AttributedLead, Decision, LeadEvent, UnlinkedLead, lead_id
from consumer.reasons import DeadLetterReason, DuplicateKind, Mode, UnlinkedReason
from consumer.state.customer import CustomerState, HeldVerification, Item, PendingLead


@dataclass(frozen=True, slots=True)
class Windows:
    """The windows of rule 8, in milliseconds of arrival time."""

    pending_ttl_ms: int
    orphan_grace_ms: int
    dedupe_ttl_ms: int


def attribute(
    state: CustomerState, event: LeadEvent, at_ms: int, now_ms: int, windows: Windows
) -> tuple[CustomerState, Decision]:
    """Apply one valid event that reached Kafka at ``at_ms``, decided at ``now_ms``; returns the
    new state and what to publish or count."""
    state = state.pruned(at_ms)
    if event.click_id is None:
        return _verification(state, event, at_ms, now_ms, windows)
    if event.deferred:
        return _deferred_event1(state, event, event.click_id, at_ms, now_ms, windows)
    return _direct(state, event, event.click_id, at_ms, now_ms, windows)


def _locked(now_ms: int) -> Decision:
    # Attribution is locked to the first click while a deferred lead is open (rules 1 and 2).
    return Decision(
        dead_letter=DeadLetterReason.DUPLICATE_ATTRIBUTION,
        detail="a deferred lead for this customer is pending with another click or event",
        decided_at_ms=now_ms,
    )


def _mark_done(state: CustomerState, event_name: str, until_ms: int) -> dict[str, int]:
    return {**state.done, event_name: until_ms}


def _direct(
    state: CustomerState, event: LeadEvent, click_id: str, at_ms: int, now_ms: int, windows: Windows
) -> tuple[CustomerState, Decision]:
    """Rule 1."""
    if state.active_pending(at_ms) is not None:
        return state, _locked(now_ms)
    if state.is_done(event.event_name, at_ms):
        return state, Decision(duplicate=DuplicateKind.DIRECT, decided_at_ms=now_ms)
    lead = AttributedLead(
        lead_id=lead_id(event.customer_external_id, click_id, event.event_name),
        customer_external_id=event.customer_external_id,
        click_id=click_id,
        event_name=event.event_name,
        mode=Mode.DIRECT,
        verification_event_name=None,
        customer_name=event.customer_name,
        customer_email=event.customer_email,
        customer_avatar=event.customer_avatar,
        metadata=event.metadata,
        event_timestamp_ms=event.timestamp_ms,
        verified_timestamp_ms=None,
        attributed_at_ms=now_ms,
    )
    done = _mark_done(state, event.event_name, at_ms + windows.dedupe_ttl_ms)
    new_state = CustomerState(state.pending, state.held, done, state.verified_until_ms)
    return new_state, Decision(attributed=lead, decided_at_ms=now_ms)


def _deferred_event1(
    state: CustomerState, event: LeadEvent, click_id: str, at_ms: int, now_ms: int, windows: Windows
) -> tuple[CustomerState, Decision]:
    """Rule 2."""
    pending = state.active_pending(at_ms)
    if pending is not None:
        if pending.click_id == click_id and pending.event_name == event.event_name:
            return state, Decision(duplicate=DuplicateKind.DEFERRED_EVENT1, decided_at_ms=now_ms)
        return state, _locked(now_ms)
    if state.is_done(event.event_name, at_ms):
        return state, Decision(duplicate=DuplicateKind.DEFERRED_EVENT1, decided_at_ms=now_ms)
    held = state.active_held(at_ms)
    if held is not None:
        # Rule 4: the early Event 2 was waiting for exactly this Event 1.
        lead = _deferred_lead(
            event.customer_external_id, _pending_from(event, click_id, at_ms, 0), held, now_ms
        )
        return (
            CustomerState(
                pending=state.pending,
                held=tuple(h for h in state.held if h is not held),
                done=_mark_done(state, event.event_name, at_ms + windows.dedupe_ttl_ms),
                verified_until_ms=at_ms + windows.dedupe_ttl_ms,
            ),
            Decision(attributed=lead, decided_at_ms=now_ms),
        )
    stored = _pending_from(event, click_id, at_ms, at_ms + windows.pending_ttl_ms)
    new_state = CustomerState((*state.pending, stored), state.held, state.done, state.verified_until_ms)
    return new_state, Decision(decided_at_ms=now_ms)


def _verification(
    state: CustomerState, event: LeadEvent, at_ms: int, now_ms: int, windows: Windows
) -> tuple[CustomerState, Decision]:
    """Rules 3 and 4."""
    pending = state.active_pending(at_ms)
    if pending is not None:
        verification = _held_from(event, at_ms, at_ms)
        lead = _deferred_lead(event.customer_external_id, pending, verification, now_ms)
        new_state = CustomerState(
            held=state.held,
            pending=tuple(p for p in state.pending if p is not pending),
            done=_mark_done(state, pending.event_name, at_ms + windows.dedupe_ttl_ms),
            verified_until_ms=at_ms + windows.dedupe_ttl_ms,
        )
        return new_state, Decision(
            attributed=lead, verification_delay_ms=max(0, at_ms - pending.created_ms), decided_at_ms=now_ms
        )
    if state.verified_until_ms > at_ms or state.active_held(at_ms) is not None:
        # Verified recently, or an earlier Event 2 already waits for Event 1: one orphan per customer.
        return state, Decision(duplicate=DuplicateKind.VERIFICATION, decided_at_ms=now_ms)
    held = _held_from(event, at_ms, at_ms + windows.orphan_grace_ms)
    new_state = CustomerState(state.pending, (*state.held, held), state.done, state.verified_until_ms)
    return new_state, Decision(decided_at_ms=now_ms)


def _pending_from(event: LeadEvent, click_id: str, at_ms: int, deadline_ms: int) -> PendingLead:
    return PendingLead(
        click_id=click_id,
        event_name=event.event_name,
        customer_name=event.customer_name,
        customer_email=event.customer_email,
        customer_avatar=event.customer_avatar,
        metadata=event.metadata,
        event_timestamp_ms=event.timestamp_ms,
        created_ms=at_ms,
        deadline_ms=deadline_ms,
    )


def _held_from(event: LeadEvent, at_ms: int, deadline_ms: int) -> HeldVerification:
    return HeldVerification(
        event_name=event.event_name,
        customer_name=event.customer_name,
        customer_email=event.customer_email,
        customer_avatar=event.customer_avatar,
        metadata=event.metadata,
        verified_timestamp_ms=event.timestamp_ms,
        created_ms=at_ms,
        deadline_ms=deadline_ms,
    )


def _deferred_lead(cid: str, event1: PendingLead, event2: HeldVerification, now_ms: int) -> AttributedLead:
    """Rule 3: clickId, eventName and customer details come from Event 1."""
    return AttributedLead(
        lead_id=lead_id(cid, event1.click_id, event1.event_name),
        customer_external_id=cid,
        click_id=event1.click_id,
        event_name=event1.event_name,
        mode=Mode.DEFERRED,
        verification_event_name=event2.event_name,
        customer_name=event1.customer_name,
        customer_email=event1.customer_email,
        customer_avatar=event1.customer_avatar,
        metadata=event1.metadata,
        event_timestamp_ms=event1.event_timestamp_ms,
        verified_timestamp_ms=event2.verified_timestamp_ms,
        attributed_at_ms=now_ms,
    )


# --- expiry (rules 4 and 5): pure helpers used by the sweeper --------------------------------


def due_items(state: CustomerState, watermark_ms: int, now_ms: int) -> list[Item]:
    """Items whose deadline every input partition has been processed past (``watermark_ms``,
    arrival time) and that no other sweeper holds a live lease on (``now_ms``, the shared clock)."""
    return [
        item for item in state.items() if item.deadline_ms <= watermark_ms and item.lease_until_ms <= now_ms
    ]


def claim(state: CustomerState, items: list[Item], lease_until_ms: int) -> CustomerState:
    """Lease items to this sweeper: others skip them until the lease runs out (at least once)."""
    chosen = {id(item) for item in items}
    return replace(
        state,
        pending=tuple(
            replace(p, lease_until_ms=lease_until_ms) if id(p) in chosen else p for p in state.pending
        ),
        held=tuple(replace(h, lease_until_ms=lease_until_ms) if id(h) in chosen else h for h in state.held),
    )


def release(state: CustomerState, reported: list[Item]) -> CustomerState:
    """Forget items that were reported. Equality, not identity: the state may have been re-read."""
    keys = {_identity(item) for item in reported}
    return replace(
        state,
        pending=tuple(p for p in state.pending if _identity(p) not in keys),
        held=tuple(h for h in state.held if _identity(h) not in keys),
    )


def _identity(item: Item) -> tuple[str, str, int]:
    return (type(item).__name__, item.event_name, item.created_ms)


def unlinked(cid: str, item: Item, now_ms: int) -> UnlinkedLead:
    """The record for an expired item. Its leadId identifies this unlinked record (cid, click,
    event, reason and deadline): a re-report after a lapsed lease repeats it, a later orphan of the
    same name gets a new one."""
    if isinstance(item, PendingLead):
        reason, click_id, timestamp = (
            UnlinkedReason.VERIFICATION_EXPIRED,
            item.click_id,
            item.event_timestamp_ms,
        )
    else:
        reason, click_id, timestamp = UnlinkedReason.NO_MATCHING_EVENT1, None, item.verified_timestamp_ms
    return UnlinkedLead(
        lead_id=lead_id(cid, click_id, item.event_name, f"{reason.value}:{item.deadline_ms}"),
        customer_external_id=cid,
        reason=reason,
        event_name=item.event_name,
        click_id=click_id,
        customer_name=item.customer_name,
        customer_email=item.customer_email,
        customer_avatar=item.customer_avatar,
        metadata=item.metadata,
        event_timestamp_ms=timestamp,
        detected_at_ms=now_ms,
    )
