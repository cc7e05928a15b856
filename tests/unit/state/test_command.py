"""apply.lua's command as packed by consumer/state/command.py: the same bytes as hiredis packs for
the keys and arguments apply.lua documents (its header), whatever the values."""

from __future__ import annotations

import random
from typing import Any

import hiredis

from consumer.state.command import apply_command, wake_numbers
from consumer.state.customer import PartitionKey, Write
from consumer.state.keys import state_key, wake_second

SHA = "0123456789abcdef0123456789abcdef01234567"
P0: PartitionKey = ("leads.raw", 0)
P1: PartitionKey = ("leads.raw", 5)


def reference(
    keys: list[str], args: list[Any], prefix: str, writes: list[Write], numbers: dict[PartitionKey, int]
) -> bytes:
    """The command spelled out as apply.lua reads it, packed by hiredis."""
    seconds = wake_numbers(writes)
    all_keys = keys + [f"{prefix}:s:{{{w.cid}}}" for w in writes]
    per_write: list[Any] = []
    for w in writes:
        wake = 0 if w.wake_ms is None else seconds[w.wake_ms // 1000]
        per_write += [w.old_blob or b"", w.new_blob or b"", w.pending_delta, w.held_delta, wake, w.cid]
        per_write.append(len(w.journal))
        for partition, fragment in w.journal.items():
            per_write += [numbers[partition], fragment]
    return bytes(hiredis.pack_command((b"EVALSHA", SHA, len(all_keys), *all_keys, *args, *per_write)))


def random_write(rng: random.Random, n: int) -> Write:
    def blob() -> bytes | None:
        return None if rng.random() < 0.2 else rng.randbytes(rng.choice([0, 1, 17, 300, 5000]))

    journal = {p: rng.randbytes(rng.choice([1, 40, 4200])) for p in (P0, P1) if rng.random() < 0.6}
    return Write(
        cid=rng.choice(["c", "usr_0123456789abcdef", "odd:{cid}", "é" * 40]) + str(n),
        old_blob=blob(),
        new_blob=blob(),
        wake_ms=None
        if rng.random() < 0.3
        else rng.choice([999, 1_000, 1_764_000_000_123, 1_764_000_001_000]),
        journal=journal,
        pending_delta=rng.choice([-3, -1, 0, 1, 2, 1023, 1024, 70_000]),
        held_delta=rng.choice([-1, 0, 1]),
    )


def test_packs_what_hiredis_packs_for_apply_luas_layout() -> None:
    rng = random.Random(7)
    numbers = {P0: 1, P1: 2}
    for size in (0, 1, 2, 50):
        writes = [random_write(rng, n) for n in range(size)]
        seconds = wake_numbers(writes)
        keys = ["p:wake", "p:pending", "p:held", "p:j:leads.raw:0", "p:j:leads.raw:5"]
        keys += [f"p:wake:{s}" for s in seconds]
        args: list[Any] = [len(writes), 2, len(seconds), 1_764_000_000_000, "17:ab.0", "18:ab.0", *seconds]
        packed = apply_command(SHA, keys, args, "p", writes, numbers, seconds)
        assert packed == reference(keys, args, "p", writes, numbers)


def test_wake_lists_are_numbered_in_order_of_first_use() -> None:
    writes = [
        Write("a", None, b"x", wake_ms=5_500),
        Write("b", None, b"x"),
        Write("c", None, b"x", wake_ms=3_000),
        Write("d", None, b"x", wake_ms=5_999),
    ]
    assert wake_numbers(writes) == {5: 1, 3: 2}
    assert [wake_second(ms) for ms in (0, 999, 1_000)] == [0, 0, 1]


def test_state_key_hash_tag_is_the_cid() -> None:
    assert state_key("lead", "odd:{cid}") == "lead:s:{odd:{cid}}"
