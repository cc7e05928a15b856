"""Base-128 varints (consumer/avro/varint.py) against the textbook loop, and zigzag round trips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from consumer.avro.varint import unzigzag, uvarint, zigzag


def textbook(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@given(st.integers(0, 2**70) | st.sampled_from([0, 0x7F, 0x80, 0x3FFF, 0x4000, 2**63 - 1, 2**63, 2**64]))
def test_uvarint_writes_the_textbook_bytes(n: int) -> None:
    assert uvarint(n) == textbook(n)


@given(st.integers(-(2**64), 2**64))
def test_zigzag_round_trips(n: int) -> None:
    assert unzigzag(zigzag(n)) == n
    assert zigzag(n) >= 0
