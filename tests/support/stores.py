"""Test helpers for state stores: concurrent writers without threads, and the index audit."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from consumer.state.codec import decode_state
from consumer.state.customer import PartitionKey, Write
from consumer.state.keys import wake_second
from consumer.state.memory import InMemoryStore


@dataclass(slots=True)
class Audit:
    states: int = 0
    pending: int = 0  # items across the states, to compare with the counters
    held: int = 0
    unindexed: list[str] = field(default_factory=list)  # cids the sweeper would never visit


def audit(states: Iterable[tuple[str, bytes | None]], entries: set[tuple[int, str]]) -> Audit:
    """What the stored states say, against the wake entries (second, cid): every state must have
    one for its wake time (an empty state is deleted, never stored), since states have no TTL.
    Shared by the property tests (in-memory store) and the fault suite (Redis)."""
    result = Audit()
    for cid, blob in states:
        state = decode_state(blob)
        wake = state.wake_ms()
        result.states += 1
        result.pending += len(state.pending)
        result.held += len(state.held)
        if wake is None or (wake_second(wake), cid) not in entries:
            result.unindexed.append(cid)
    return result


class InterleavingStore(InMemoryStore):
    """An InMemoryStore that runs a hook just before the next write: another instance at work.
    A batch's first write is send_write (consumer/processing/batch.py), its conflict retries and
    the sweeper's writes are write: the hook runs before whichever comes first."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.before_next_write: Callable[[], None] | None = None

    def _interleave(self) -> None:
        hook, self.before_next_write = self.before_next_write, None
        if hook is not None:
            hook()

    def write(
        self, writes: Sequence[Write], journal_fields: Mapping[PartitionKey, str] | None = None
    ) -> list[bool]:
        self._interleave()
        return super().write(writes, journal_fields)

    def send_write(
        self,
        writes: Sequence[Write],
        journal_fields: Mapping[PartitionKey, str],
        progress: Mapping[PartitionKey, int] | None = None,
    ) -> Callable[[], list[bool]]:
        self._interleave()
        return super().send_write(writes, journal_fields, progress)


def wake_entries(client: Any, prefix: str) -> dict[int, list[str]]:
    """The wake index as stored in Redis (consumer/state/keys.py): second -> cids of its list
    (after the list's header)."""
    seconds = [int(s) for s in client.zrange(f"{prefix}:wake", 0, -1)]
    return {s: [c.decode() for c in client.lrange(f"{prefix}:wake:{s}", 1, -1)] for s in seconds}
