"""The compact state encoding round-trips and stays small."""

from __future__ import annotations

from consumer.config import Settings
from consumer.model import AttributedLead, Decision
from consumer.publish import OutputCodecs
from consumer.reasons import DeadLetterReason, DuplicateKind, Mode
from consumer.state.codec import decode_journal, decode_state, encode_journal, encode_state
from consumer.state.model import EMPTY, CustomerState, HeldVerification, PendingLead

PENDING = PendingLead(
    click_id="0b8f7c3e-6d1a-4f7e-9a51-2f4c8e9d1b23",
    event_name="signup_started",
    customer_name="Ada Lovelace",
    customer_email="ada.lovelace@example.com",
    customer_avatar="https://cdn.example.com/avatars/ada.png",
    metadata={"utm_source": "google", "utm_campaign": "q4"},
    event_timestamp_ms=1_795_687_200_000,
    created_ms=1_795_687_200_123,
    deadline_ms=1_796_292_000_123,
)


def test_state_round_trip() -> None:
    state = CustomerState(
        pending=(PENDING,),
        held=(HeldVerification("email_verified", None, None, None, None, None, 5, 6, 7),),
        done={"demo": 99},
        verified_until_ms=42,
    )
    assert decode_state(encode_state(state)) == state
    assert decode_state(None) is EMPTY


def test_pending_lead_encoding_is_compact() -> None:
    blob = encode_state(CustomerState(pending=(PENDING,)))
    payload = sum(len(s) for s in (PENDING.click_id, PENDING.event_name, PENDING.customer_name or "")) + sum(
        len(s)
        for s in (
            PENDING.customer_email or "",
            PENDING.customer_avatar or "",
            "utm_sourcegoogleutm_campaignq4",
        )
    )
    # No field names; the overhead is quotes, commas and four 13-digit timestamps.
    assert len(blob) <= payload + 100


def test_journal_round_trip_keeps_the_published_bytes() -> None:
    codecs = OutputCodecs(Settings())
    lead = AttributedLead("id", "cid", "k", "e", Mode.DEFERRED, "v", "n", None, None, {"a": "b"}, 1, None, 77)
    record = codecs.attributed_output(lead, None).value
    decision = Decision(attributed=lead, verification_delay_ms=5, decided_at_ms=77)
    assert decode_journal(encode_journal(decision, record), codecs.decode_attributed) == (decision, record)
    for other in (
        Decision(
            dead_letter=DeadLetterReason.DUPLICATE_ATTRIBUTION, detail="locked: a\x00b", decided_at_ms=3
        ),
        Decision(duplicate=DuplicateKind.DIRECT, decided_at_ms=4),
        Decision(decided_at_ms=9),
    ):
        assert decode_journal(encode_journal(other, None), codecs.decode_attributed) == (other, None)
