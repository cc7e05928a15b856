"""A state store for tests of concurrent writers, without threads."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from consumer.state.memory import InMemoryStore
from consumer.state.store import PartitionKey, Write


class InterleavingStore(InMemoryStore):
    """An InMemoryStore that runs a hook just before the next write: another instance at work."""

    def __init__(self) -> None:
        super().__init__()
        self.before_next_write: Callable[[], None] | None = None

    def write(
        self, writes: Sequence[Write], journal_fields: Mapping[PartitionKey, str] | None = None
    ) -> list[bool]:
        hook, self.before_next_write = self.before_next_write, None
        if hook is not None:
            hook()
        return super().write(writes, journal_fields)
