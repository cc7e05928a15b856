"""apply.lua's command for a batch of writes, packed straight into Redis protocol bytes.

A batch's write is one EVALSHA with ~10 arguments per customer: ~15,000 for a batch of 2,000
events. Building them as a Python list (store.py) and packing that with hiredis cost ~6 us of
consumer CPU per event, half of it in hiredis's generic packer (bench pipeline, docs/performance.md).
Compiled (setup.py), this writes each argument's bytes once, with the headers of short values and
small numbers taken from tables. The layout (which key and argument goes where) is apply.lua's,
documented there; tests/unit/test_command.py checks these bytes against hiredis's packing of the
same keys and arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from consumer.state.customer import PartitionKey, Write
from consumer.state.keys import state_key, wake_second

# Each argument is written as the line end of what came before it, its header and its bytes:
# "\r\n$<length>\r\n" + value (the first one's "\r\n" ends the "*<count>" line, and one more ends
# the command). Two parts per argument rather than three: the join copies ~40,000 parts a batch.
_CRLF: Final = b"\r\n"
# "\r\n$<length>\r\n" for the lengths nearly every argument has.
_HEADS: Final = [b"\r\n$%d\r\n" % n for n in range(4096)]
# The small numbers (counter deltas, wake list and partition numbers), header included: one part.
_NUMBERS: Final = [b"\r\n$%d\r\n%d" % (len(b"%d" % n), n) for n in range(1024)]


def wake_numbers(writes: Sequence[Write]) -> dict[int, int]:
    """Wake second -> its number (from 1) among the wake lists these writes append to."""
    seconds: dict[int, int] = {}
    for w in writes:
        if w.wake_ms is not None:
            second = wake_second(w.wake_ms)
            if second not in seconds:
                seconds[second] = len(seconds) + 1
    return seconds


class _Packer:
    """A RESP array of bulk strings, argument by argument."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.count = 0

    def data(self, value: bytes) -> None:
        size = len(value)
        self.parts.append(_HEADS[size] if size < 4096 else b"\r\n$%d\r\n" % size)
        self.parts.append(value)
        self.count += 1

    def text(self, value: str) -> None:
        self.data(value.encode())

    def number(self, value: int) -> None:
        if 0 <= value < 1024:
            self.parts.append(_NUMBERS[value])
            self.count += 1
        else:
            self.data(b"%d" % value)

    def packed(self) -> bytes:
        self.parts.append(_CRLF)
        return b"*%d" % self.count + b"".join(self.parts)


def apply_command(
    sha: str,
    keys: Sequence[str],
    args: Sequence[str | int],
    prefix: str,
    writes: Sequence[Write],
    partition_numbers: Mapping[PartitionKey, int],
    seconds: Mapping[int, int],
) -> bytes:
    """EVALSHA <sha>, the batch's ``keys`` and ``args`` (apply.lua's fixed ones), then each write's
    state key and arguments. ``partition_numbers`` and ``seconds`` number the journal hashes and
    wake lists among those keys."""
    packer = _Packer()
    packer.data(b"EVALSHA")
    packer.text(sha)
    packer.number(len(keys) + len(writes))
    for key in keys:
        packer.text(key)
    for w in writes:
        packer.text(state_key(prefix, w.cid))
    for arg in args:
        if isinstance(arg, str):
            packer.text(arg)
        else:
            packer.number(arg)
    for w in writes:
        packer.data(w.old_blob or b"")
        packer.data(w.new_blob or b"")
        packer.number(w.pending_delta)
        packer.number(w.held_delta)
        packer.number(0 if w.wake_ms is None else seconds[wake_second(w.wake_ms)])
        packer.text(w.cid)
        packer.number(len(w.journal))
        for partition, fragment in w.journal.items():
            packer.number(partition_numbers[partition])
            packer.data(fragment)
    return packer.packed()
