"""An in-memory StateStore with the same semantics as RedisStore, for unit and property tests.

It is not used in production: state must outlive the process and be shared between instances.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence

from consumer.state.customer import PartitionKey, Write
from consumer.state.keys import wake_second
from consumer.state.store import Due, Fenced, PartitionMark, Reading, StateLost, Wake, parse_journal


class InMemoryStore:
    """``clock``: the shared clock (Redis's TIME in production), in seconds."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.marks: dict[PartitionKey, int] = {}
        self.stored_progress: dict[PartitionKey, int] = {}
        self.owners: dict[PartitionKey, int] = {}
        self._floors: dict[PartitionKey, int] = {}
        self._tokens: dict[PartitionKey, int] = {}
        self.states: dict[str, bytes] = {}
        self.quarantined: dict[str, list[bytes]] = {}  # cid -> the unreadable blobs kept aside
        self.journals: dict[PartitionKey, dict[bytes, bytes]] = {}
        self.wakes: dict[int, list[str]] = {}  # second -> cids, as the wake lists in Redis
        self.wake_headers: dict[int, tuple[int, int]] = {}  # second -> (list id, entries removed)
        self._lists_made = 0
        self.committed: dict[PartitionKey, int] = {}
        self.pending = 0
        self.held = 0
        self.round_trips = 0

    def read(self, cids: Collection[str], journal_from: Mapping[PartitionKey, int]) -> Reading:
        self.round_trips += 1
        reading = Reading({cid: self.states.get(cid) for cid in cids}, now_ms=self._now_ms())
        self._observe()
        for partition, first_offset in journal_from.items():
            covered = min(first_offset, self.committed.get(partition, -1))
            entries, stale = parse_journal(partition, self.journals.get(partition, {}), first_offset, covered)
            reading.journal.update(entries)
            self.forget_journal({partition: stale})
            if partition in self.committed:
                reading.committed[partition] = self.committed[partition]
        return reading

    def write(
        self, writes: Sequence[Write], journal_fields: Mapping[PartitionKey, str] | None = None
    ) -> list[bool]:
        if not writes:
            return []
        return self._write(writes, journal_fields, {})

    def _write(
        self,
        writes: Sequence[Write],
        journal_fields: Mapping[PartitionKey, str] | None,
        progress: Mapping[PartitionKey, int],
    ) -> list[bool]:
        """As apply.lua: the guards first (nothing is written unless all hold), then the writes,
        then the batch's progress raised."""
        for partition in {*self._floors, *progress}:
            have = self.stored_progress.get(partition, -1)
            least = self._floors.get(partition, -1)
            if least >= 0 and have < least:
                raise StateLost(f"{partition} {have} {least}")
            if (
                partition in progress
                and self._tokens.get(partition, 0)
                and self.owners.get(partition, 0) != self._tokens[partition]
            ):
                raise Fenced(f"the partition {partition} was assigned to another instance")
        self.round_trips += 1
        fragments: dict[PartitionKey, list[bytes]] = {}
        applied = [self._apply(w, fragments) for w in writes]
        for partition, parts in fragments.items():
            assert journal_fields is not None, "journal entries need a field to go to"
            self.journals.setdefault(partition, {})[journal_fields[partition].encode()] = b"".join(parts)
        for partition, offset in progress.items():
            self.stored_progress[partition] = max(offset, self.stored_progress.get(partition, -1))
        return applied

    def send_write(
        self,
        writes: Sequence[Write],
        journal_fields: Mapping[PartitionKey, str],
        progress: Mapping[PartitionKey, int] | None = None,
    ) -> Callable[[], list[bool]]:
        # At once (nothing else runs until the reply is read); a refusal is raised by the reply.
        try:
            applied = self._write(writes, journal_fields, progress or {}) if writes or progress else []
        except (StateLost, Fenced) as error:
            refusal = error

            def refused() -> list[bool]:
                raise refusal

            return refused
        return lambda: applied

    def note_progress(self, known: Mapping[PartitionKey, int]) -> None:
        for partition, offset in known.items():
            self._floors[partition] = max(offset, self._floors.get(partition, offset))

    def _observe(self) -> None:
        for partition, offset in self.stored_progress.items():
            if offset > self._floors.get(partition, -1):
                self._floors[partition] = offset

    def claim_partitions(self, partitions: Sequence[PartitionKey]) -> None:
        for partition in partitions:
            self.owners[partition] = self.owners.get(partition, 0) + 1
            self._tokens[partition] = self.owners[partition]  # at once: nothing here can be away

    def reclaim(self) -> None:
        self.claim_partitions(list(self._tokens))

    def progress(self, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        return {p: self.stored_progress[p] for p in partitions if p in self.stored_progress}

    def trust_progress(self) -> None:
        self._floors = dict(self.stored_progress)

    def _apply(self, w: Write, fragments: dict[PartitionKey, list[bytes]]) -> bool:
        if self.states.get(w.cid) != w.old_blob:
            return False
        if w.new_blob is None:
            self.states.pop(w.cid, None)
        else:
            self.states[w.cid] = w.new_blob
        for partition, fragment in w.journal.items():
            fragments.setdefault(partition, []).append(fragment)
        if w.wake_ms is not None:
            second = wake_second(w.wake_ms)
            if second not in self.wakes:
                self._lists_made += 1
                self.wakes[second], self.wake_headers[second] = [], (self._lists_made, 0)
            self.wakes[second].append(w.cid)
        self.pending += w.pending_delta
        self.held += w.held_delta
        return True

    def forget_journal(self, fields: Mapping[PartitionKey, Sequence[str]]) -> None:
        for partition, names in fields.items():
            journal = self.journals.get(partition, {})
            for name in names:
                journal.pop(name.encode(), None)
            if not journal:
                self.journals.pop(partition, None)

    def note_committed(self, offsets: Mapping[PartitionKey, int]) -> None:
        for partition, offset in offsets.items():
            self.committed[partition] = max(offset, self.committed.get(partition, offset))

    def raise_floor(self, offsets: Mapping[PartitionKey, int]) -> None:
        self.note_committed(offsets)

    def floors(self, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        return {p: self.committed[p] for p in partitions if p in self.committed}

    def forget_committed(self, partitions: Sequence[PartitionKey]) -> None:
        for partition in partitions:
            self.committed.pop(partition, None)

    def identify_topic(self, topic: str, topic_id: str) -> None:
        return None  # one process, one life of each topic: nothing to tell apart

    def flush_queued(self) -> None:
        return None  # nothing is queued: every change applies at once

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def due(self, limit: int, partitions: Sequence[PartitionKey]) -> Due:
        self.round_trips += 1
        self._observe()
        now_ms = self._now_ms()
        if not partitions or any(p not in self.marks for p in partitions):
            return Due([], None, now_ms)
        watermark = min(self.marks[p] for p in partitions)
        wakes: list[Wake] = []
        for second in sorted(s for s in self.wakes if s <= wake_second(watermark)):
            if limit <= 0:
                break
            cids = tuple(self.wakes[second][:limit])
            list_id, removed = self.wake_headers[second]
            wakes.append(Wake(second, cids, f"{list_id}:{removed}"))
            limit -= len(cids)
        return Due(wakes, watermark, now_ms)

    def mark_partitions(self, marks: Mapping[PartitionKey, PartitionMark], idle_lag_ms: int) -> int:
        """As watermark.lua: marks only move forward."""
        now_ms = self._now_ms()
        for partition, (newest, caught_up) in marks.items():
            mark = max(newest, now_ms - idle_lag_ms) if caught_up else newest
            if mark >= 0 and mark > self.marks.get(partition, -1):
                self.marks[partition] = mark
        return now_ms

    def ack(self, wake: Wake, count: int) -> None:
        """As wake_ack.lua: by position since the list was made, only entries still there."""
        if count <= 0 or wake.second not in self.wakes:
            return
        read_id, start = (int(part) for part in wake.header.split(":"))
        list_id, removed = self.wake_headers[wake.second]
        done = start + count
        if list_id != read_id or removed >= done:
            return
        del self.wakes[wake.second][: done - removed]
        self.wake_headers[wake.second] = (list_id, done)
        if not self.wakes[wake.second]:
            del self.wakes[wake.second], self.wake_headers[wake.second]

    def counts(self) -> tuple[int, int]:
        return self.pending, self.held

    def erasures(self) -> int:
        return 0  # `leadattr forget` works on Redis only

    def quarantine(self, cid: str, blob: bytes) -> bool:
        kept = self.quarantined.setdefault(cid, [])
        if blob in kept:
            return False
        kept.append(blob)
        return True

    def ping(self) -> None:
        return None

    def wake_entries(self) -> set[tuple[int, str]]:
        return {(second, cid) for second, cids in self.wakes.items() for cid in cids}
