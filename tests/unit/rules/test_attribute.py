"""Table-driven tests of the pure attribution rules: one case per rule of contract section 3."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pytest

from consumer.model import Decision, LeadEvent, lead_id
from consumer.reasons import DeadLetterReason, DuplicateKind, Mode, UnlinkedReason
from consumer.rules.attribute import Windows, attribute, claim, due_items, release, unlinked
from consumer.state.customer import EMPTY, CustomerState, HeldVerification, PendingLead

W = Windows(pending_ttl_ms=10_000, orphan_grace_ms=5_000, dedupe_ttl_ms=60_000)
T0 = 1_000_000
# The shared clock when the events are decided: far past every window, as after an outage. The
# windows run on arrival time (the first time passed to attribute), so no decision may change.
CLOCK = T0 + 7_000_000
CID = "cust-1"


def decide(state: CustomerState, event: LeadEvent, at_ms: int) -> tuple[CustomerState, Decision]:
    return attribute(state, event, at_ms, CLOCK, W)


def direct(name: str = "signup", click: str = "click-A") -> LeadEvent:
    return LeadEvent(CID, name, click_id=click, timestamp_ms=111, customer_email="a@example.com")


def event1(name: str = "signup", click: str = "click-A") -> LeadEvent:
    return LeadEvent(
        CID, name, click_id=click, deferred=True, timestamp_ms=222, customer_name="Ann", metadata={"k": "v"}
    )


def event2(name: str = "email_verified") -> LeadEvent:
    return LeadEvent(CID, name, timestamp_ms=333, customer_name="Other")


@dataclass
class Case:
    name: str
    history: list[tuple[int, LeadEvent]]  # (ms after T0, event) applied first
    at: int  # ms after T0 for the event under test
    event: LeadEvent
    mode: Mode | None = None  # an attributed lead with this mode is expected
    dead_letter: DeadLetterReason | None = None
    duplicate: DuplicateKind | None = None
    pending_after: int = 0
    held_after: int = 0
    extra: dict[str, object] = field(default_factory=dict)


CASES = [
    Case("rule 1: direct lead attributed", [], 0, direct(), mode=Mode.DIRECT),
    Case(
        "rule 1: direct lead while a deferred lead is pending",
        [(0, event1())],
        1,
        direct(),
        dead_letter=DeadLetterReason.DUPLICATE_ATTRIBUTION,
        pending_after=1,
    ),
    Case(
        "rule 1: same direct lead again is a duplicate",
        [(0, direct())],
        1,
        direct(),
        duplicate=DuplicateKind.DIRECT,
    ),
    Case(
        "rule 1: same direct lead after the dedupe window is new",
        [(0, direct())],
        60_001,
        direct(),
        mode=Mode.DIRECT,
    ),
    Case(
        "rule 1: direct lead for another event name",
        [(0, direct())],
        1,
        direct("demo_booked"),
        mode=Mode.DIRECT,
    ),
    Case("rule 2: deferred Event 1 stored as pending", [], 0, event1(), pending_after=1),
    Case(
        "rule 2: same Event 1 again is a duplicate",
        [(0, event1())],
        1,
        event1(),
        duplicate=DuplicateKind.DEFERRED_EVENT1,
        pending_after=1,
    ),
    Case(
        "rule 2: another click while pending is locked out",
        [(0, event1())],
        1,
        event1(click="click-B"),
        dead_letter=DeadLetterReason.DUPLICATE_ATTRIBUTION,
        pending_after=1,
    ),
    Case(
        "rule 2: another event name while pending is locked out",
        [(0, event1())],
        1,
        event1(name="demo"),
        dead_letter=DeadLetterReason.DUPLICATE_ATTRIBUTION,
        pending_after=1,
    ),
    Case(
        "rule 2: Event 1 of an attributed lead is a duplicate",
        [(0, event1()), (1, event2())],
        2,
        event1(),
        duplicate=DuplicateKind.DEFERRED_EVENT1,
    ),
    Case("rule 2: Event 1 joins an early Event 2", [(0, event2())], 1, event1(), mode=Mode.DEFERRED),
    Case(
        "rule 2: Event 1 after its pending lead expired is stored again",
        [(0, event1())],
        10_000,
        event1(),
        pending_after=2,
    ),  # the expired one stays until the sweeper reports it
    Case("rule 3: Event 2 joins the pending lead", [(0, event1())], 500, event2(), mode=Mode.DEFERRED),
    Case(
        "rule 3: Event 2 again after verification is a duplicate",
        [(0, event1()), (1, event2())],
        2,
        event2(),
        duplicate=DuplicateKind.VERIFICATION,
    ),
    Case(
        "rule 3: Event 2 after the dedupe window is held again",
        [(0, event1()), (1, event2())],
        60_002,
        event2(),
        held_after=1,
    ),
    Case(
        "rule 3: Event 2 after the pending lead expired is held",
        [(0, event1())],
        10_000,
        event2(),
        pending_after=1,
        held_after=1,
    ),
    Case("rule 4: early Event 2 held", [], 0, event2(), held_after=1),
    Case(
        "rule 4: second early Event 2 is a duplicate",
        [(0, event2())],
        1,
        event2("phone_verified"),
        duplicate=DuplicateKind.VERIFICATION,
        held_after=1,
    ),
    Case(
        "rule 4: Event 1 after the grace period does not join",
        [(0, event2())],
        5_000,
        event1(),
        pending_after=1,
        held_after=1,
    ),
]


def run(case: Case) -> tuple[CustomerState, object]:
    state = EMPTY
    for offset, event in case.history:
        state, _ = decide(state, event, T0 + offset)
    return decide(state, case.event, T0 + case.at)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_rule(case: Case) -> None:
    state, decision = run(case)
    assert decision.dead_letter == case.dead_letter  # type: ignore[attr-defined]
    assert decision.duplicate == case.duplicate  # type: ignore[attr-defined]
    lead = decision.attributed  # type: ignore[attr-defined]
    assert (lead.mode if lead else None) == case.mode
    assert len(state.pending) == case.pending_after
    assert len(state.held) == case.held_after


def test_deferred_lead_carries_event1_details_and_event2_name() -> None:
    state, _ = decide(EMPTY, event1(), T0)
    _, decision = decide(state, event2(), T0 + 1500)
    lead = decision.attributed
    assert lead is not None
    assert (lead.click_id, lead.event_name, lead.verification_event_name) == (
        "click-A",
        "signup",
        "email_verified",
    )
    assert (lead.customer_name, lead.metadata) == ("Ann", {"k": "v"})  # Event 1's, not Event 2's
    assert (lead.event_timestamp_ms, lead.verified_timestamp_ms) == (222, 333)
    assert lead.attributed_at_ms == CLOCK  # stamped with the shared clock
    assert decision.verification_delay_ms == 1500
    assert lead.lead_id == lead_id(CID, "click-A", "signup")


def test_early_event2_joined_by_event1_uses_both() -> None:
    state, _ = decide(EMPTY, event2(), T0)
    state, decision = decide(state, event1(), T0 + 10)
    lead = decision.attributed
    assert lead is not None and lead.mode is Mode.DEFERRED
    assert (lead.verification_event_name, lead.verified_timestamp_ms, lead.customer_name) == (
        "email_verified",
        333,
        "Ann",
    )
    assert state.held == () and state.is_done("signup", T0 + 11)


def test_lead_id_is_a_standard_uuid5() -> None:
    import uuid  # noqa: PLC0415

    from consumer.model import LEAD_ID_NAMESPACE  # noqa: PLC0415

    for parts in [
        ("cust-1", "click", "signup", ""),
        ("ü", "", "e", "verification_expired:5"),
        ("a", "b", "c", ""),
    ]:
        cid, click, event, reason = parts
        name = "".join(f"{len(p)}:{p}" for p in parts)
        assert lead_id(cid, click or None, event, reason) == str(uuid.uuid5(LEAD_ID_NAMESPACE, name))


def test_lead_id_is_deterministic_and_distinguishes_parts() -> None:
    assert lead_id("a", "b", "c") == lead_id("a", "b", "c")
    assert lead_id("a", "b", "c") != lead_id("a", "bc", "")
    assert lead_id("a:b", None, "c") != lead_id("a", "b", "c")


def test_windows_run_on_arrival_time_not_the_producer_timestamp_or_the_clock() -> None:
    old = replace(event1(), timestamp_ms=0)  # a backfill from 1970 must not be expired on arrival
    state, _ = decide(EMPTY, old, T0)
    assert state.pending[0].deadline_ms == T0 + W.pending_ttl_ms
    # Its Event 2 reached Kafka 6 s later, in time; it is processed long after the deadline (an
    # outage): it joins all the same.
    _, decision = decide(state, event2(), T0 + 6_000)
    assert decision.attributed is not None and decision.attributed.mode is Mode.DEFERRED
    # One that reached Kafka after the deadline does not, whenever it is processed.
    late, decision = attribute(state, event2(), T0 + 10_000, T0 + 10_000, W)
    assert decision.attributed is None and len(late.held) == 1


def test_a_claimed_item_is_inactive_for_attribution() -> None:
    """A sweeper claimed the pending lead (it is being reported as expired): an Event 2 that reached
    Kafka before the deadline does not join it, or the lead would be both attributed and unlinked."""
    state, _ = decide(EMPTY, event1(), T0)
    claimed = claim(state, list(state.pending), CLOCK + 30_000)
    joined, decision = decide(claimed, event2(), T0 + 9_000)
    assert decision.attributed is None
    assert len(joined.pending) == 1 and len(joined.held) == 1  # held, as an Event 2 with no Event 1


def test_expiry_claim_and_release() -> None:
    state, _ = decide(EMPTY, event1(), T0)
    assert due_items(state, T0 + 9_999, CLOCK) == []  # the watermark has not passed the deadline
    items = due_items(state, T0 + 10_000, CLOCK)
    assert len(items) == 1
    claimed = claim(state, items, CLOCK + 30_000)
    assert due_items(claimed, T0 + 10_001, CLOCK + 1) == []  # leased: other sweepers skip it
    assert len(due_items(claimed, T0 + 40_000, CLOCK + 30_000)) == 1  # lease lapsed: reported again
    assert release(claimed, items).pending == ()
    record = unlinked(CID, items[0], T0 + 10_000)
    assert record.reason is UnlinkedReason.VERIFICATION_EXPIRED
    assert record.click_id == "click-A"
    assert record.lead_id == lead_id(CID, "click-A", "signup", f"verification_expired:{T0 + 10_000}")
    again = unlinked(CID, items[0], T0 + 45_000)  # re-reported after a lapsed lease: same identity
    assert again.lead_id == record.lead_id


def test_orphan_event2_unlinked_record() -> None:
    state, _ = decide(EMPTY, event2(), T0)
    (item,) = due_items(state, T0 + 5_000, CLOCK)
    assert isinstance(item, HeldVerification)
    record = unlinked(CID, item, T0 + 5_000)
    assert (record.reason, record.event_name, record.click_id) == (
        UnlinkedReason.NO_MATCHING_EVENT1,
        "email_verified",
        None,
    )


def test_state_forgets_old_dedupe_marks() -> None:
    state, _ = decide(EMPTY, direct(), T0)
    assert state.done
    later, _ = decide(state, direct("other"), T0 + 60_001)
    assert set(later.done) == {"other"}
    assert later.wake_ms() == T0 + 60_001 + W.dedupe_ttl_ms  # then the state can be deleted


def test_wake_time_is_the_first_item_due_then_the_last_dedupe_mark() -> None:
    state, _ = decide(EMPTY, event1(), T0)
    assert isinstance(state.pending[0], PendingLead)
    assert state.wake_ms() == state.pending[0].deadline_ms
    leased = claim(state, list(state.pending), state.pending[0].deadline_ms + 30_000)
    assert leased.wake_ms() == state.pending[0].deadline_ms + 30_000  # a claimed item: its lease
    joined, _ = decide(state, event2(), T0 + 1_000)
    assert not joined.items() and joined.wake_ms() == max(joined.done.values())
    assert EMPTY.wake_ms() is None
