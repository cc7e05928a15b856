"""RedisStore, the store production runs: one read pipeline and one write script per batch, and a
committed-offset floor against committed offsets going back (docs/design.md, "The Redis store")."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import redis

from consumer.state.command import apply_command, wake_numbers
from consumer.state.customer import PartitionKey, Write
from consumer.state.keys import erasures_key, floor_member, legacy_member_cid, quarantine_key, state_key
from consumer.state.scripts import Script, applied_or_refused, script_text
from consumer.state.store import LEGACY, Due, PartitionMark, Reading, Wake, nothing_applied, parse_journal


class RedisStore:
    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        journal_ttl_ms: int,
        group: str,
        min_replicas: int = 0,
        replica_timeout_ms: int = 2_000,
    ) -> None:
        self._r = client
        self._min_replicas = min_replicas  # the barrier: a write counts once this many replicas have it
        self._replica_timeout_ms = replica_timeout_ms
        self._floors: dict[str, int] = {}  # member -> the least progress a write requires
        self._tokens: dict[str, str] = {}  # member -> this instance's fencing token
        self._unclaimed: set[PartitionKey] = set()  # assigned, token not taken yet
        self._prefix = prefix
        self._journal_ttl_ms = journal_ttl_ms
        self._apply = Script(client, "apply.lua")
        self._committed_script = script_text("committed.lua")
        self._due_script = script_text("wake_due.lua")
        self._ack_script = script_text("wake_ack.lua")
        self._marks_script = script_text("watermark.lua")
        self._claim_script = script_text("claim.lua")
        self._queued_floor: dict[str, int] = {}
        self._topic_ids: dict[str, str] = {}
        self._queued_forget: dict[PartitionKey, list[str]] = {}
        self._queued_acks: list[tuple[Wake, int]] = []
        self._unread: list[Any] = []  # connections whose ZADD (raise_floor) awaits its reply being read
        self._unread_lock = threading.Lock()
        self.wake_key = f"{prefix}:wake"
        self.legacy_index_key = f"{prefix}:deadlines"
        self.pending_key = f"{prefix}:pending"
        self.held_key = f"{prefix}:held"
        self.committed_key = f"{prefix}:committed:{group}"
        self.marks_key = f"{prefix}:marks:{group}"
        self.progress_key = f"{prefix}:progress:{group}"
        self.owners_key = f"{prefix}:owners:{group}"

    def state_key(self, cid: str) -> str:
        return state_key(self._prefix, cid)

    def journal_key(self, partition: PartitionKey) -> str:
        return f"{self._prefix}:j:{partition[0]}:{partition[1]}"

    def wake_list_key(self, second: int) -> str:
        return f"{self.wake_key}:{second}"

    def read(self, cids: Collection[str], journal_from: Mapping[PartitionKey, int]) -> Reading:
        self._read_floor_replies()
        if not cids and not journal_from and not self._queued_forget and not self._queued_floor:
            return Reading({})
        pipe = self._r.pipeline(transaction=False)
        queued = self._queued_into(pipe)
        pipe.time()
        state_key = self.state_key
        names = list(cids)
        if names:
            pipe.mget([state_key(cid) for cid in names])
        for partition in journal_from:
            pipe.hgetall(self.journal_key(partition))
        if journal_from:
            pipe.zmscore(self.committed_key, [self._member(p) for p in journal_from])
        pipe.hgetall(self.progress_key)
        clock, *replies, stored = pipe.execute()[queued:]
        self._sent()
        self._observe(stored)
        now_ms = clock[0] * 1000 + clock[1] // 1000
        reading = Reading(dict(zip(names, replies[0] or (), strict=True)) if names else {}, now_ms=now_ms)
        if journal_from:
            for partition, score in zip(journal_from, replies[-1], strict=True):
                if score is not None:
                    reading.committed[partition] = int(score)
        hashes = replies[1 if names else 0 : -1 if journal_from else None]
        for (partition, first_offset), fields in zip(journal_from.items(), hashes, strict=True):
            if fields:
                covered = min(first_offset, reading.committed.get(partition, -1))
                entries, stale = parse_journal(partition, fields, first_offset, covered)
                reading.journal.update(entries)
                if stale:
                    self._queued_forget[partition] = stale
        return reading

    def write(
        self, writes: Sequence[Write], journal_fields: Mapping[PartitionKey, str] | None = None
    ) -> list[bool]:
        if not writes:
            return []
        return applied_or_refused(
            self._apply.send(self._write_command(writes, journal_fields or {}, {}), self._barrier())
        )

    def send_write(
        self,
        writes: Sequence[Write],
        journal_fields: Mapping[PartitionKey, str],
        progress: Mapping[PartitionKey, int] | None = None,
    ) -> Callable[[], list[bool]]:
        if not writes and not progress:
            return nothing_applied
        self._claim(list(progress or ()))
        reply = self._apply.send(self._write_command(writes, journal_fields, progress or {}), self._barrier())
        return lambda: applied_or_refused(reply)

    def _barrier(self) -> tuple[int, int] | None:
        return (self._min_replicas, self._replica_timeout_ms) if self._min_replicas else None

    def _write_command(
        self,
        writes: Sequence[Write],
        journal_fields: Mapping[PartitionKey, str],
        progress: Mapping[PartitionKey, int],
    ) -> Callable[[str], bytes]:
        """apply.lua's command for ``writes``, packed once the script's sha is known (compiled:
        consumer/state/command.py). Its guards: the least progress of every partition known, and
        the fencing token of the batch's own partitions."""
        partitions = list(journal_fields)
        number = {partition: n for n, partition in enumerate(partitions, 1)}
        seconds = wake_numbers(writes)
        keys: list[str] = [self.wake_key, self.pending_key, self.held_key, self.progress_key, self.owners_key]
        keys += [self.journal_key(p) for p in partitions]
        keys += [self.wake_list_key(second) for second in seconds]
        raised = {self._member(p): offset for p, offset in progress.items()}
        members = [*self._floors, *(m for m in raised if m not in self._floors)]
        args: list[str | int] = [
            len(writes),
            len(partitions),
            len(seconds),
            self._journal_ttl_ms,
            len(members),
        ]
        for member in members:
            token = self._tokens.get(member, "") if member in raised else ""
            args += [member, self._floors.get(member, -1), raised.get(member, -1), token]
        args += [journal_fields[p] for p in partitions]
        args += list(seconds)
        prefix = self._prefix
        return lambda sha: apply_command(sha, keys, args, prefix, writes, number, seconds)

    def note_progress(self, known: Mapping[PartitionKey, int]) -> None:
        for partition, offset in known.items():
            member = self._member(partition)
            self._floors[member] = max(offset, self._floors.get(member, offset))

    def _observe(self, stored: Mapping[bytes, bytes]) -> None:
        """Progress as read: a later write requires at least that much (Redis must not go back)."""
        floors = self._floors
        for raw, value in stored.items():
            member, offset = raw.decode(), int(value)
            if offset > floors.get(member, -1):
                floors[member] = offset

    def claim_partitions(self, partitions: Sequence[PartitionKey]) -> None:
        """Taken with the partitions' first write (see _claim): Redis may be away right now."""
        for partition in partitions:
            self._unclaimed.add(partition)
            self._tokens.pop(self._member(partition), None)

    def _claim(self, partitions: Sequence[PartitionKey]) -> None:
        """The fencing tokens of those of ``partitions`` not taken yet (HINCRBY: the holder's before
        is refused from now on)."""
        wanted = [p for p in partitions if p in self._unclaimed]
        if not wanted:
            return
        members = [self._member(p) for p in wanted]
        token = self._r.eval(self._claim_script, 1, self.owners_key, *members)
        for partition, member in zip(wanted, members, strict=True):
            self._tokens[member] = token.decode() if isinstance(token, bytes) else str(token)
            self._unclaimed.discard(partition)

    def reclaim(self) -> None:
        """Take every partition again with the next write (after a restore, or an owners hash
        lost): new tokens, which also fence whoever held the old ones."""
        for member in list(self._tokens):
            self._unclaimed.update(p for p in self._partitions_of(member))
        self._tokens = {}

    def _partitions_of(self, member: str) -> list[PartitionKey]:
        topic_partition = member.rsplit("@", 1)[0]
        topic, partition = topic_partition.rsplit(":", 1)
        return [(topic, int(partition))]

    def progress(self, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        if not partitions:
            return {}
        stored = self._r.hmget(self.progress_key, [self._member(p) for p in partitions])
        return {p: int(v) for p, v in zip(partitions, stored, strict=True) if v is not None}

    def trust_progress(self) -> None:
        stored: dict[bytes, bytes] = self._r.hgetall(self.progress_key)  # type: ignore[assignment]
        self._floors = {member.decode(): int(offset) for member, offset in stored.items()}

    def forget_journal(self, fields: Mapping[PartitionKey, Sequence[str]]) -> None:
        """Queue deletion of committed journal fields; they ride along with the next command."""
        for partition, names in fields.items():
            if names:
                self._queued_forget.setdefault(partition, []).extend(names)

    def note_committed(self, offsets: Mapping[PartitionKey, int]) -> None:
        for partition, offset in offsets.items():
            member = self._member(partition)
            self._queued_floor[member] = max(offset, self._queued_floor.get(member, offset))

    def raise_floor(self, offsets: Mapping[PartitionKey, int]) -> None:
        """ZADD GT, sent without waiting for its reply: Redis runs it after the batch write it is
        busy with (a script of ~20 ms at full load), and the commit thread waiting for that held up
        every batch (make bench, docs/performance.md). Redis runs what it has received even if this
        process dies next. The reply is read before this store next reads or writes the floor, so
        those see the floor raised."""
        if not offsets:
            return
        scores: list[str | int] = []
        for partition, offset in offsets.items():
            scores += [offset, self._member(partition)]
        pool = self._r.connection_pool
        connection: Any = pool.get_connection()
        try:
            connection.send_command("ZADD", self.committed_key, "GT", *scores)
        except BaseException:
            connection.disconnect()
            pool.release(connection)
            raise
        with self._unread_lock:
            self._unread.append(connection)

    def _read_floor_replies(self) -> None:
        """The replies raise_floor left unread. A failed one is not retried here: note_committed
        queued the same floor, sent with the next read."""
        with self._unread_lock:
            unread, self._unread = self._unread, []
        pool = self._r.connection_pool
        for connection in unread:
            try:
                connection.read_response()
            except redis.RedisError:
                connection.disconnect()  # a reply may still be on the way: never reuse it
            finally:
                pool.release(connection)

    def floors(self, partitions: Sequence[PartitionKey]) -> dict[PartitionKey, int]:
        self._read_floor_replies()
        if not partitions:
            return {}
        scores = self._r.zmscore(self.committed_key, [self._member(p) for p in partitions])
        return {p: int(score) for p, score in zip(partitions, scores, strict=True) if score is not None}

    def forget_committed(self, partitions: Sequence[PartitionKey]) -> None:
        self._read_floor_replies()
        for partition in partitions:
            self._queued_floor.pop(self._member(partition), None)
        self._r.zrem(self.committed_key, *(self._member(p) for p in partitions))

    def identify_topic(self, topic: str, topic_id: str) -> None:
        self._topic_ids[topic] = topic_id

    def _member(self, partition: PartitionKey) -> str:
        return floor_member(partition, self._topic_ids.get(partition[0], ""))

    member = _member  # "<topic>:<partition>@<topic id>", as the progress, marks and floor name it

    @property
    def client(self) -> redis.Redis:
        return self._r

    @property
    def prefix(self) -> str:
        return self._prefix

    def forget_floors(self) -> None:
        """No write requires any progress any more (a restore is about to set it)."""
        self._floors = {}

    def committed_floor(self) -> dict[str, int]:
        """The floor as stored, "<topic>:<partition>@<topic id>" -> offset (for the operator command)."""
        self._read_floor_replies()
        pairs: list[tuple[bytes, float]] = self._r.zrange(self.committed_key, 0, -1, withscores=True)  # type: ignore[assignment]
        return {member.decode(): int(score) for member, score in pairs}

    def clear_committed_floor(self) -> None:
        self._r.delete(self.committed_key)

    def _queued_into(self, pipe: Any) -> int:
        """Add the queued clean-ups to ``pipe``; returns how many commands that is. The floor and
        the journal clean-up go as one script (committed.lua), floor first: a journal entry is
        never deleted unless the floor covering its offset was stored."""
        commands = 0
        if self._queued_floor or self._queued_forget:
            keys = [self.committed_key, *(self.journal_key(p) for p in self._queued_forget)]
            args: list[Any] = [len(self._queued_floor)]
            for member, offset in self._queued_floor.items():
                args += [offset, member]
            for names in self._queued_forget.values():
                args += [len(names), *names]
            # EVAL, not EVALSHA: a pipeline cannot reload a script Redis forgot (the text is small).
            pipe.eval(self._committed_script, len(keys), *keys, *args)
            commands += 1
        if self._queued_acks:
            commands += self._acks_into(pipe)
        return commands

    def _acks_into(self, pipe: Any) -> int:
        """The queued wake acks as one script (wake_ack.lua)."""
        lists = [(wake, count) for wake, count in self._queued_acks if wake.second != LEGACY]
        legacy = [m for w, n in self._queued_acks if w.second == LEGACY for m in w.members[:n]]
        keys = [self.wake_key, self.legacy_index_key, *(self.wake_list_key(w.second) for w, _ in lists)]
        args: list[Any] = [len(legacy), *legacy]
        for wake, count in lists:
            args += [wake.second, wake.header, count]
        pipe.eval(self._ack_script, len(keys), *keys, *args)
        return 1

    def _sent(self) -> None:
        # After an error they stay queued and go again (all are idempotent; an ack whose head is gone
        # is a no-op). Lost with the process: the floor is lower, the journal expires, wakes reread.
        self._queued_floor = {}
        self._queued_forget = {}
        self._queued_acks = []

    def due(self, limit: int, partitions: Sequence[PartitionKey]) -> Due:
        self._read_floor_replies()
        pipe = self._r.pipeline(transaction=False)
        self._queued_into(pipe)  # an idle consumer still forgets what it committed
        keys = [self.wake_key, self.legacy_index_key, self.marks_key]
        members = [self._member(p) for p in partitions]
        # EVAL (see _queued_into); the script names the wake lists from the prefix it is given.
        pipe.eval(self._due_script, len(keys), *keys, limit, f"{self.wake_key}:", *members)
        pipe.hgetall(self.progress_key)
        reply, stored = pipe.execute()[-2:]
        self._sent()
        self._observe(stored)
        watermark, now_ms, rest = int(reply[0]), int(reply[1]), reply[2:]
        wakes: list[Wake] = []
        for second, header, entries in zip(rest[::3], rest[1::3], rest[2::3], strict=True):
            names = tuple(e.decode() for e in entries)
            if second == b"legacy":
                wakes.append(Wake(LEGACY, tuple(legacy_member_cid(m) for m in names), members=names))
            else:
                wakes.append(Wake(int(second), names, header.decode()))
        return Due(wakes, watermark if watermark >= 0 else None, now_ms)

    def mark_partitions(self, marks: Mapping[PartitionKey, PartitionMark], idle_lag_ms: int) -> int:
        args: list[str | int] = [idle_lag_ms]
        for partition, (newest, caught_up) in marks.items():
            args += [self._member(partition), newest, 1 if caught_up else 0]
        return int(self._r.eval(self._marks_script, 1, self.marks_key, *args))

    def ack(self, wake: Wake, count: int) -> None:
        if count > 0:
            self._queued_acks.append((wake, count))

    def counts(self) -> tuple[int, int]:
        pending, held = self._r.mget([self.pending_key, self.held_key])
        return int(pending or 0), int(held or 0)

    def erasures(self) -> int:
        return int(self._r.get(erasures_key(self._prefix)) or 0)

    def quarantine(self, cid: str, blob: bytes) -> bool:
        name = hashlib.sha256(blob).hexdigest()[:16]
        return bool(self._r.hsetnx(quarantine_key(self._prefix, cid), name, blob))

    def ping(self) -> None:
        self._r.ping()

    def flush_queued(self) -> None:
        self._read_floor_replies()
        pipe = self._r.pipeline(transaction=False)
        if self._queued_into(pipe):
            pipe.execute()
            self._sent()
