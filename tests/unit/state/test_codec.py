"""The compact state encoding round-trips and stays small."""

from __future__ import annotations

import pytest

from consumer.avro.outputs import OutputCodecs
from consumer.config import Settings
from consumer.model import AttributedLead, Decision
from consumer.reasons import DeadLetterReason, DuplicateKind, Mode
from consumer.state.codec import decode_journal, decode_state, encode_journal, encode_state, is_current
from consumer.state.customer import EMPTY, CustomerState, HeldVerification, PendingLead

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
    texts = (PENDING.event_name, PENDING.customer_name, PENDING.customer_email, PENDING.customer_avatar)
    payload = sum(len(s or "") for s in texts) + len("googleq4")
    # The clickId UUID as 16 bytes, utm_* keys as one byte each, a length byte per text and four
    # times as varints (the deadline as the 7-day TTL: 4 bytes).
    assert len(blob) <= payload + 16 + 40
    assert len(blob) < 150


def test_state_edge_values_round_trip() -> None:
    odd = [
        "0B8F7C3E-6D1A-4F7E-9A51-2F4C8E9D1B23",  # uppercase: not canonical, kept as text
        "0b8f7c3e-6d1a-4f7e-9a51-2f4c8e9d1b2 ",
        "0b8f7c3e 6d1a-4f7e-9a51-2f4c8e9d1b23",
        "{0b8f7c3e-6d1a-4f7e-9a51-2f4c8e9d1b2}",
        "x" * 36,
        "",
        "é" * 300,  # a length over one varint byte
    ]
    for click_id in odd:
        lead = PendingLead(click_id, "e", "", None, "a" * 2048, {}, -5, -10, 2**40, 7)
        state = CustomerState(pending=(lead,), done={"x": 0, "y": -(2**45)}, verified_until_ms=2**62)
        assert decode_state(encode_state(state)) == state, click_id
    metadata = {"utm_source": "a", "custom": "b", "utm_id": "", "": "c"}
    held = HeldVerification("e2", None, None, None, metadata, None, 1, 2, 0)
    state = CustomerState(held=(held,))
    assert decode_state(encode_state(state)) == state
    assert list(decode_state(encode_state(state)).held[0].metadata or {}) == list(metadata)  # order kept


def test_a_damaged_state_is_an_error_not_a_wrong_state() -> None:
    blob = encode_state(CustomerState(pending=(PENDING,), done={"demo": 99}))
    for cut in range(1, len(blob)):
        with pytest.raises(ValueError):
            decode_state(blob[:cut])
    with pytest.raises(ValueError):
        decode_state(blob + b"\x00")
    with pytest.raises(ValueError, match="version"):
        decode_state(b"\x09" + blob[1:])


def test_states_written_by_0_1_are_still_read() -> None:
    """Version 3 (JSON arrays), as 0.1.x stored it: an upgrade keeps every pending lead."""
    old = (
        b'\x03[[["0b8f7c3e-6d1a-4f7e-9a51-2f4c8e9d1b23","signup_started","Ada Lovelace",'
        b'"ada.lovelace@example.com","https://cdn.example.com/avatars/ada.png",'
        b'{"utm_source":"google","utm_campaign":"q4"},1795687200000,1795687200123,1796292000123,0]],'
        b'[],{"demo":99},42]'
    )
    state = decode_state(old)
    assert state == CustomerState(pending=(PENDING,), done={"demo": 99}, verified_until_ms=42)
    assert not is_current(old) and is_current(encode_state(state))


def test_journal_round_trip_keeps_the_published_bytes() -> None:
    codecs = OutputCodecs(Settings())
    lead = AttributedLead("id", "cid", "k", "e", Mode.DEFERRED, "v", "n", None, None, {"a": "b"}, 1, None, 77)
    record = codecs.attributed_value(lead)
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
