"""Base-128 varints: how Avro writes its longs (consumer/wire.py, zigzag first) and how the state
encoding writes lengths and times (consumer/state/codec.py)."""

from __future__ import annotations


def uvarint(n: int) -> bytes:
    """``n`` >= 0, seven bits a byte, lowest first, the high bit set on all but the last."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def zigzag(n: int) -> int:
    """0, -1, 1, -2, ... -> 0, 1, 2, 3, ...: small magnitudes, small varints. For every 64-bit
    value the same as Avro's (n << 1) ^ (n >> 63), and it stays reversible beyond."""
    return n << 1 if n >= 0 else (-n << 1) - 1


def unzigzag(n: int) -> int:
    return n >> 1 if not n & 1 else -((n + 1) >> 1)
