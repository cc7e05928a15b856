"""State loss: noticed before a single record is decided on it, then repaired without losing a lead
(contract section 3, rule 9).

Noticing. Every batch raises its input partitions' progress in Redis (the offset after its last
record) in the same script as its decisions, and every write, the batch's and the sweeper's, is
refused unless each partition's progress is at least what this instance knows was committed
(asked of Kafka at start-up and assignment, and after each commit) or has itself read from Redis
(apply.lua's guards). Redis's word only moves forward, so a Redis that went back in time (a
failover to a replica the last writes had not reached, a crash that lost the AOF's last second, a
flush, a restore of an old backup) refuses the next write with StateLost, and nothing decided on
it is written or published. Then Kafka judges: a partition whose committed offset is past its
progress in Redis lost committed state; if none did, only writes that were never committed were
lost (they are replayed like any uncommitted batch) and work goes on. A lost state is reported:
readiness "state_lost", leads_state_lost = 1, one log line.

Repairing. The state changelog (consumer/state/changelog.py) holds every committed batch's states.
A restore takes a lock in Redis, fences every writer (the progress is deleted, so each guard
refuses), waits until no transaction is open on the changelog, reads the group's committed input
offsets, clears the damaged state, loads the changelog's states, rebuilds the wake index and the
counters from them, and sets the progress and the committed-offset floor to the committed offsets.
The consumers' next writes then pass their guards and they go on. With LEADS_STATE_RESTORE=auto
(the default) the first instance that notices restores; with manual, an operator runs
`leadattr restore-state`.

A Redis that holds states while the changelog holds none is never restored over automatically:
that is a deployment upgraded from a release without a changelog (seed it with
`leadattr restore-state --from-redis`), and wiping its states would lose every pending lead.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import redis
from confluent_kafka import KafkaException

from consumer.health import Health
from consumer.logs import fields
from consumer.state.changelog import ChangelogReader
from consumer.state.codec import CorruptState, decode_state
from consumer.state.customer import PartitionKey, Write
from consumer.state.redis_store import RedisStore
from consumer.state.store import StateLost

log = logging.getLogger(__name__)

LOCK_TTL_MS = 60_000  # renewed while the restore runs; lapses if the restorer dies
_CHUNK = 1000
_RELEASE_LOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"

CommittedOffsets = Callable[[], dict[PartitionKey, int]]  # every input partition's, from Kafka


class RestoreRefused(Exception):
    """A restore that would lose state: the reason, in one line."""


def lost_partitions(
    store: RedisStore, committed: Mapping[PartitionKey, int]
) -> dict[PartitionKey, tuple[int, int]]:
    """The partitions whose committed offset is past their progress in Redis: (progress, committed)."""
    known = {p: offset for p, offset in committed.items() if offset >= 0}
    progress = store.progress(list(known))
    return {p: (progress.get(p, -1), offset) for p, offset in known.items() if progress.get(p, -1) < offset}


@dataclass(frozen=True, slots=True)
class Restored:
    states: int
    records: int
    seconds: float


def restore(
    store: RedisStore,
    reader: ChangelogReader,
    committed: CommittedOffsets,
    beat: Callable[[], None] = lambda: None,
    from_redis: bool = False,
    read: Callable[[int], None] = lambda records: None,
) -> Restored:
    """Rebuild the state from the changelog (see the module docstring), under the restore lock.
    RestoreRefused when another restore holds the lock, or the changelog is empty while Redis
    holds states."""
    started = time.monotonic()
    lock = RestoreLock(store)
    if not lock.take():
        raise RestoreRefused("another instance is restoring the state")
    try:
        client = store.client
        client.delete(store.progress_key)  # every writer's guard refuses from here on
        store.forget_floors()
        ends = reader.settled_ends()
        offsets = committed()
        ends = reader.settled_ends()  # the transactions that committed those offsets, settled too
        held = _count(client, f"{store.prefix}:s:*")
        if not any(ends.values()) and held:
            raise RestoreRefused(
                f"the state changelog {reader.topic} is empty while Redis holds {held} customer states: "
                "an upgrade from a release without a changelog? Run `leadattr restore-state --from-redis`"
            )
        _clear(client, store.prefix, lock)
        records = 0
        for chunk in reader.states(ends):
            lock.renew()
            beat()
            records += len(chunk)
            read(records)
            pipe = client.pipeline(transaction=False)
            for cid, state in chunk:
                key = store.state_key(cid)
                pipe.set(key, state) if state else pipe.delete(key)
            pipe.execute()
        states = _index(store, lock, beat)
        set_progress(store, offsets)
        store.trust_progress()
        return Restored(states, records, time.monotonic() - started)
    finally:
        lock.release()


class RestoreLock:
    """One restore at a time (SET NX with a token, renewed, released only by its holder)."""

    def __init__(self, store: RedisStore) -> None:
        self._client = store.client
        self.key = f"{store.prefix}:restore-lock"
        self._token = os.urandom(8).hex()

    def take(self) -> bool:
        return bool(self._client.set(self.key, self._token, nx=True, px=LOCK_TTL_MS))

    def renew(self) -> None:
        self._client.set(self.key, self._token, xx=True, px=LOCK_TTL_MS)

    def release(self) -> None:
        self._client.eval(_RELEASE_LOCK, 1, self.key, self._token)


def _count(client: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=_CHUNK))


def _clear(client: redis.Redis, prefix: str, lock: RestoreLock) -> None:
    """The damaged state: customer states, wake index, journals, counters, the old index."""
    for pattern in (f"{prefix}:s:*", f"{prefix}:wake*", f"{prefix}:j:*"):
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=_CHUNK):
            batch.append(key)
            if len(batch) >= _CHUNK:
                client.unlink(*batch)
                batch = []
                lock.renew()
        if batch:
            client.unlink(*batch)
    client.delete(f"{prefix}:pending", f"{prefix}:held", f"{prefix}:deadlines")


def _index(store: RedisStore, lock: RestoreLock, beat: Callable[[], None]) -> int:
    """Every loaded state's wake entry and its counters, through apply.lua (a compare-and-set of
    each state with itself): the same code that keeps them for every batch."""
    client = store.client
    start = len(store.prefix) + len(":s:{")
    states = 0
    keys: list[bytes] = []

    def flush() -> None:
        blobs: list[bytes | None] = client.mget(keys)  # type: ignore[assignment]
        writes = []
        for key, blob in zip(keys, blobs, strict=True):
            if blob is None:
                continue
            try:
                state = decode_state(blob)
            except CorruptState:  # indexed as nothing: the customer's next event moves it aside
                continue
            cid = key.decode()[start:-1]
            writes.append(Write(cid, blob, blob, state.wake_ms(), None, len(state.pending), len(state.held)))
        store.write(writes)

    for key in client.scan_iter(match=f"{store.prefix}:s:*", count=_CHUNK):
        keys.append(key)
        states += 1
        if len(keys) >= _CHUNK:
            flush()
            keys = []
            lock.renew()
            beat()
    if keys:
        flush()
    return states


def set_progress(store: RedisStore, offsets: Mapping[PartitionKey, int]) -> None:
    """The progress and the committed-offset floor: where the restored state stands."""
    known = {p: o for p, o in offsets.items() if o >= 0}
    if not known:
        return
    client = store.client
    pipe = client.pipeline(transaction=True)
    pipe.delete(store.progress_key)
    pipe.hset(store.progress_key, mapping={store.member(p): o for p, o in known.items()})
    pipe.zadd(store.committed_key, {store.member(p): o for p, o in known.items()}, gt=True)
    pipe.execute()


def _unknown() -> dict[PartitionKey, int]:
    raise TimeoutError("the committed offsets are not known yet")


class Recovery:
    """What the run loop does about state loss: checks at start-up and assignment, judges a
    refused write, reports, and restores when it may (LEADS_STATE_RESTORE=auto)."""

    def __init__(
        self,
        store: RedisStore,
        health: Health,
        reader: Callable[[], ChangelogReader],
        auto: bool,
        committed: CommittedOffsets | None = None,
    ) -> None:
        self.store = store
        self.health = health
        # Every input partition's committed offset, from Kafka: the run loop's consumer answers it,
        # so the wiring sets it once that exists (consumer/app.py).
        self.committed: CommittedOffsets = committed or _unknown
        self.reader = reader
        self.auto = auto
        self._refusal: str | None = None  # why this instance did not restore, logged once per loss

    def check(self, partitions: Sequence[PartitionKey] | None = None) -> bool:
        """Compare Redis with Kafka's committed offsets (of every input partition, or of the
        given ones): True when nothing committed is missing; every later write then requires at
        least those offsets. Reports and, when it may, restores otherwise."""
        committed = self.committed()
        if partitions is not None:
            committed = {p: committed.get(p, -1) for p in partitions}
        lost = lost_partitions(self.store, committed)
        if not lost:
            self.store.note_progress({p: o for p, o in committed.items() if o >= 0})
            self._report_intact()
            return True
        self._lost(lost)
        return False

    def intact(self) -> None:
        """A batch's write passed its guards: Redis holds everything this instance knows was
        committed. After a loss, that is how an instance that did not restore learns that another
        one did (or that an operator ran restore-state), and it reports ready again."""
        if not self.health.state_ok:
            self._report_intact()

    def recheck(self) -> None:
        """While the state is known lost: judge again (an idle instance has no write to learn from)."""
        if self.health.state_ok:
            return
        try:
            self.check()
        except (redis.RedisError, KafkaException, TimeoutError) as error:
            log.debug("lost state not judged again yet", extra=fields(error=str(error)))

    def refused(self, error: StateLost) -> None:
        """A write was refused by its guard: lost committed state, or only uncommitted writes?"""
        lost = lost_partitions(self.store, self.committed())
        if not lost:
            log.info(
                "redis lost writes that were not committed yet; they are replayed",
                extra=fields(detail=str(error)),
            )
            self.store.trust_progress()
            self.store.reclaim()
            self._report_intact()
            return
        self._lost(lost)

    def _lost(self, lost: Mapping[PartitionKey, tuple[int, int]]) -> None:
        self.health.report_state(
            False, {f"{t}:{p}": {"redis": have, "committed": want} for (t, p), (have, want) in lost.items()}
        )
        if not self.auto:
            return
        reader = self.reader()
        try:
            done = restore(self.store, reader, self.committed, self.health.beat)
        except RestoreRefused as refusal:
            if str(refusal) != self._refusal:  # each retry is refused alike: one line per loss
                log.warning("state not restored here", extra=fields(reason=str(refusal)))
                self._refusal = str(refusal)
            return
        finally:
            reader.close()
        log.info(
            "state restored from the changelog",
            extra=fields(states=done.states, records=done.records, seconds=round(done.seconds, 1)),
        )
        self.store.reclaim()
        self._report_intact()

    def _report_intact(self) -> None:
        self._refusal = None
        self.health.report_state(True)
