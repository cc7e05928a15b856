"""What the pipeline and the sweeper need from state storage (StateStore), and what they read.

Two implementations: RedisStore (consumer/state/redis_store.py), what production runs, and
InMemoryStore (consumer/state/memory.py) for unit and property tests; one contract suite runs
against both (tests/integration/test_store_contract.py). The keys are in consumer/state/keys.py.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from consumer.state.codec import unframe_journal
from consumer.state.customer import PartitionKey, Write
from consumer.state.keys import field_last_offset

Position = tuple[str, int, int]  # (topic, partition, offset) of one input record


@dataclass(frozen=True, slots=True)
class Reading:
    states: dict[str, bytes | None]  # None: no state stored
    journal: dict[Position, bytes] = field(default_factory=dict)  # decisions not yet committed
    committed: dict[PartitionKey, int] = field(default_factory=dict)  # the floor, where there is one
    # The shared clock (Redis's TIME) in the same round trip: every instance stamps its decisions
    # with one clock, whatever its own says.
    now_ms: int = 0


class StateLost(Exception):
    """Redis holds less than was committed: an input partition's progress there is below what this
    instance knows was committed or has seen (a failover to a stale replica, a lost AOF tail, a
    flush, an old backup). Nothing was written. consumer/state/recovery.py decides."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"state behind what was committed: {detail}")


class Fenced(Exception):
    """A partition of the write was assigned to another instance since this one took it: the
    write of a zombie, refused. Nothing was written."""


class ReplicasBehind(Exception):
    """The write is on the primary but fewer replicas than LEADS_REDIS_MIN_REPLICAS acknowledged it
    in time: the batch must not be committed yet."""


# A partition's mark for the watermark: (the newest arrival time committed from it, -1 for none;
# whether its owner has consumed it to the end).
PartitionMark = tuple[int, bool]


LEGACY = -1  # Wake.second of entries from the index of releases before 0.2.0


@dataclass(frozen=True, slots=True)
class Wake:
    """The head of one wake list as read: customers to look at, in list order."""

    second: int  # the list's second (wake times in [second, second + 1 s)), or LEGACY
    cids: tuple[str, ...]
    # The list's header as read, "<list id>:<entries removed before these>": acks go by position.
    header: str = ""
    members: tuple[str, ...] = ()  # LEGACY only: the "<due ms>:<cid>" members read


@dataclass(frozen=True, slots=True)
class Due:
    """What the expiry sweeper reads in one round trip."""

    wakes: list[Wake]
    # The lowest partition mark (arrival time): deadlines up to it may be reported. None while a
    # partition has no mark yet (nothing is due then).
    watermark_ms: int | None
    now_ms: int  # the shared clock, for leases and the records' detectedAt


class StateStore(Protocol):
    """What the pipeline and the sweeper need from state storage; Redis or in-memory."""

    def read(self, cids: Collection[str], journal_from: Mapping[PartitionKey, int]) -> Reading:
        """States of ``cids``, and for the partitions in ``journal_from`` (the first offset of the
        batch in each) their journal entries and committed-offset floor. Entries before that
        offset were committed: dropped."""
        ...

    def write(
        self, writes: Sequence[Write], journal_fields: Mapping[PartitionKey, str] | None = None
    ) -> list[bool]:
        """Apply each write whose state is unchanged; their journal goes to ``journal_fields``."""
        ...

    def send_write(
        self,
        writes: Sequence[Write],
        journal_fields: Mapping[PartitionKey, str],
        progress: Mapping[PartitionKey, int] | None = None,
    ) -> Callable[[], list[bool]]:
        """write() of a batch, without waiting: the returned call waits for the outcome, and must be
        made before anything else reads these customers' states (it is, on one connection, in
        order). ``progress``: the batch's partitions and the offset after its last record, raised
        with the writes; the write is sent even when there are none, and guarded (see guards).
        Raises (from the returned call) StateLost, Fenced or ReplicasBehind."""
        ...

    def note_progress(self, known: Mapping[PartitionKey, int]) -> None:
        """Offsets this instance knows were committed (asked of Kafka): every later write requires
        at least this progress in Redis, or it is refused with StateLost."""
        ...

    def claim_partitions(self, partitions: Sequence[PartitionKey]) -> None:
        """Take the partitions for this instance (at assignment): a write for them by whoever held
        them before is refused from now on (Fenced)."""
        ...

    def progress(self, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        """The progress of these partitions as stored, where there is one."""
        ...

    def quarantine(self, cid: str, blob: bytes) -> bool:
        """Keep a state blob that cannot be read aside, beside the customer (keys.quarantine_key);
        True when this blob was not kept already. The state itself is left to the caller's write."""
        ...

    def reclaim(self) -> None:
        """Take this instance's partitions again, with new fencing tokens, at the next write."""
        ...

    def trust_progress(self) -> None:
        """The progress as stored now is the floor for later writes (after a check against Kafka
        found nothing lost, or a restore)."""
        ...

    def forget_journal(self, fields: Mapping[PartitionKey, Sequence[str]]) -> None: ...

    def note_committed(self, offsets: Mapping[PartitionKey, int]) -> None:
        """Raise the committed-offset floor (never lowers it); sent in one step with, and ahead of,
        the queued journal clean-ups."""
        ...

    def raise_floor(self, offsets: Mapping[PartitionKey, int]) -> None:
        """Raise the floor at once, on its own (never lowers it): called by the commit thread the
        moment a commit is confirmed, while the run loop may be using the store (no queue). It
        need not wait for Redis, but what reads the floor next through this store sees it."""
        ...

    def floors(self, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        """The floor of these partitions, where there is one."""
        ...

    def forget_committed(self, partitions: Sequence[PartitionKey]) -> None:
        """Drop the floor of these partitions (at once, not queued)."""
        ...

    def identify_topic(self, topic: str, topic_id: str) -> None:
        """Kafka's id of ``topic`` as it is now: the floor is kept per topic id."""
        ...

    def flush_queued(self) -> None:
        """Send what note_committed, forget_journal and ack queued now rather than with the next read."""
        ...

    def due(self, limit: int, partitions: Sequence[PartitionKey]) -> Due:
        """The watermark of ``partitions`` (every input partition), the shared clock, and up to
        ``limit`` wake entries of the seconds up to the watermark, oldest second first."""
        ...

    def mark_partitions(self, marks: Mapping[PartitionKey, PartitionMark], idle_lag_ms: int) -> int:
        """Raise the partitions' marks (never lowers one): a caught-up partition's to the shared
        clock less ``idle_lag_ms``, else to its newest committed arrival time. Returns the clock."""
        ...

    def ack(self, wake: Wake, count: int) -> None:
        """The first ``count`` entries of ``wake`` were handled: remove those of them still in the
        list (another sweeper may have removed some first), by position, never an entry appended
        since. Queued like the journal clean-ups."""
        ...

    def counts(self) -> tuple[int, int]: ...

    def erasures(self) -> int:
        """How many erasures `leadattr forget` carried out (consumer/tools/forget.py)."""
        ...

    def ping(self) -> None: ...


def parse_journal(
    partition: PartitionKey, fields: Mapping[bytes, bytes], first_offset: int, covered: int
) -> tuple[dict[Position, bytes], list[str]]:
    """(entries of the fields a batch starting at ``first_offset`` may need, names of the fields
    that may be deleted). Fields before the batch's first offset are not needed: its start is
    where the group's commits reached. They are deleted only below ``covered`` (the floor, as
    read in the same round trip), so the floor covers every deleted entry; the others wait for
    the floor or their TTL."""
    entries: dict[Position, bytes] = {}
    stale: list[str] = []
    topic, number = partition
    for raw_name, value in fields.items():
        name = raw_name.decode()
        last = field_last_offset(name)
        if last < first_offset:
            if last < covered:
                stale.append(name)
            continue
        for offset, entry in unframe_journal(value):
            entries[(topic, number, offset)] = entry
    return entries, stale


def nothing_applied() -> list[bool]:
    """The reply to a write of nothing (no customer to write, or no write sent yet)."""
    return []
