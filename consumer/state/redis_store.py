"""RedisStore: the state store production runs, on one Redis (or a primary with replicas).

The committed-offset floor exists because the broker's word was seen to go backwards: right after
a broker crash the group coordinator answered committed() with no offset, or an older one, and
the partitions started there (make chaos, docs/chaos.md). Input below an offset that was once
confirmed committed has been published and its journal entries forgotten: processing it again
would publish it twice. So a confirmed commit is noted here (ZADD GT: it only moves forward) in
the same script that then deletes its journal entries (committed.lua), every batch read checks
its partitions against it, and the pipeline refuses a batch that starts below it. Entries are
per topic id, so a topic deleted and created again starts without one. It is cleared only by an
operator who means to replay (`leadattr clear-offset-floor`, after stopping the consumers).

A batch costs three round trips' worth of commands, and the run loop waits for none of them
alone. The read is one pipeline: the clean-ups queued since the last one (one script that raises
the floor again and deletes committed journal fields), one MGET of every state, one HGETALL per
input partition and one ZMSCORE of the floor. The write is one script: a compare-and-set per
customer plus, for the customers that applied, one journal field per partition, one RPUSH per wake
second and the counters; it is sent ahead (send_write) and its reply read in the run loop's next
round. After the Kafka commit, the commit thread raises the floor at once (raise_floor, ZADD GT,
its reply read later). A few commands per batch rather than several per customer is what keeps
both the Python client and Redis cheap (docs/performance.md).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from importlib import resources
from typing import Any

import redis
from redis.exceptions import NoScriptError

from consumer.state.command import apply_command, wake_numbers
from consumer.state.customer import PartitionKey, Write
from consumer.state.keys import floor_member, legacy_member_cid, state_key
from consumer.state.store import LEGACY, Due, PartitionMark, Reading, Wake, nothing_applied, parse_journal


class RedisStore:
    def __init__(self, client: redis.Redis, prefix: str, journal_ttl_ms: int, group: str) -> None:
        self._r = client
        self._prefix = prefix
        self._journal_ttl_ms = journal_ttl_ms
        self._apply = _Script(client, "apply.lua")
        self._committed_script = _script_text("committed.lua")
        self._due_script = _script_text("wake_due.lua")
        self._ack_script = _script_text("wake_ack.lua")
        self._marks_script = _script_text("watermark.lua")
        self._queued_floor: dict[str, int] = {}
        self._topic_ids: dict[str, str] = {}
        self._queued_forget: dict[PartitionKey, list[str]] = {}
        self._queued_acks: list[tuple[Wake, int]] = []
        # Connections whose ZADD (raise_floor, on the commit thread) awaits its reply being read.
        self._unread: list[Any] = []
        self._unread_lock = threading.Lock()
        self.wake_key = f"{prefix}:wake"
        self.legacy_index_key = f"{prefix}:deadlines"
        self.pending_key = f"{prefix}:pending"
        self.held_key = f"{prefix}:held"
        self.committed_key = f"{prefix}:committed:{group}"
        self.marks_key = f"{prefix}:marks:{group}"

    @classmethod
    def from_url(cls, url: str, prefix: str, journal_ttl_ms: int, group: str) -> RedisStore:
        # Short timeouts: an unreachable Redis must surface as an error the run loop can back off on,
        # not as a consumer hung past max.poll.interval.ms.
        client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30
        )
        return cls(client, prefix, journal_ttl_ms, group)

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
        clock, *replies = pipe.execute()[queued:]
        self._sent()
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
        return _applied(self._apply(self._write_command(writes, journal_fields or {})))

    def send_write(
        self, writes: Sequence[Write], journal_fields: Mapping[PartitionKey, str]
    ) -> Callable[[], list[bool]]:
        if not writes:
            return nothing_applied
        reply = self._apply.send(self._write_command(writes, journal_fields))
        return lambda: _applied(reply())

    def _write_command(
        self, writes: Sequence[Write], journal_fields: Mapping[PartitionKey, str]
    ) -> Callable[[str], bytes]:
        """apply.lua's command for ``writes``, packed once the script's sha is known (compiled:
        consumer/state/command.py)."""
        partitions = list(journal_fields)
        number = {partition: n for n, partition in enumerate(partitions, 1)}
        seconds = wake_numbers(writes)
        keys: list[str] = [self.wake_key, self.pending_key, self.held_key]
        keys += [self.journal_key(p) for p in partitions]
        keys += [self.wake_list_key(second) for second in seconds]
        args: list[str | int] = [len(writes), len(partitions), len(seconds)]
        args.append(self._journal_ttl_ms)
        args += [journal_fields[p] for p in partitions]
        args += list(seconds)
        prefix = self._prefix
        return lambda sha: apply_command(sha, keys, args, prefix, writes, number, seconds)

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
            # EVAL, not EVALSHA: a pipeline cannot reload a script Redis forgot; the text is small
            # and Redis keeps it compiled.
            pipe.eval(self._committed_script, len(keys), *keys, *args)
            commands += 1
        if self._queued_acks:
            commands += self._acks_into(pipe)
        return commands

    def _acks_into(self, pipe: Any) -> int:
        """The queued wake acks as one script (wake_ack.lua)."""
        lists = [(wake, count) for wake, count in self._queued_acks if wake.second != LEGACY]
        legacy = [
            m for wake, count in self._queued_acks if wake.second == LEGACY for m in wake.members[:count]
        ]
        keys = [self.wake_key, self.legacy_index_key, *(self.wake_list_key(w.second) for w, _ in lists)]
        args: list[Any] = [len(legacy), *legacy]
        for wake, count in lists:
            args += [wake.second, wake.header, count]
        pipe.eval(self._ack_script, len(keys), *keys, *args)
        return 1

    def _sent(self) -> None:
        # After an error they stay queued and go again with the next command: all are idempotent
        # (an ack whose head is gone is a no-op). Lost with the process, the floor is only lower,
        # the journal expires and the wake entries are read again.
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
        reply = pipe.execute()[-1]
        self._sent()
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

    def ping(self) -> None:
        self._r.ping()

    def flush_queued(self) -> None:
        self._read_floor_replies()
        pipe = self._r.pipeline(transaction=False)
        if self._queued_into(pipe):
            pipe.execute()
            self._sent()


def _applied(reply: list[int]) -> list[bool]:
    return [r == 1 for r in reply]


def _script_text(name: str) -> str:
    return resources.files("consumer.state").joinpath("lua", name).read_text()


class _Script:
    """EVALSHA with a reload when Redis has forgotten the script (after a restart).

    The command is packed in one pass (consumer/state/command.py, compiled) and sent on a pooled
    connection directly: a batch's write carries ~10 arguments per customer, and both redis-py's
    packing (a Python generator over them) and hiredis's generic one cost more than the rest of
    the write (docs/performance.md). No client-side retry either: the run loop decides what a
    failed write means (the journal makes a repeated batch publish the same)."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self._r = client
        self._text = _script_text(name)
        self._sha = ""

    def __call__(self, command: Callable[[str], bytes]) -> Any:
        return self.send(command)()

    def send(self, command: Callable[[str], bytes]) -> Callable[[], Any]:
        """The EVALSHA ``command`` packs for the script's sha, sent on a connection of its own;
        the returned call reads the reply (once). Redis runs commands of one connection in order,
        and the caller reads this reply before sending anything that depends on it, so nothing
        reads what this script has not written."""
        if not self._sha:
            self._sha = str(self._r.script_load(self._text))
        packed = command(self._sha)
        pool = self._r.connection_pool
        connection: Any = pool.get_connection()  # redis-py leaves Connection untyped
        try:
            connection.send_packed_command([packed])
        except BaseException:
            connection.disconnect()  # a half-sent command must not precede the next one
            pool.release(connection)
            raise

        def reply() -> Any:
            try:
                return connection.read_response()
            except NoScriptError:
                # Nothing ran: EVALSHA failed before executing, so sending it again is safe.
                self._sha = ""
                return self(command)
            except BaseException:
                connection.disconnect()  # its reply may still be on the way: never reuse it
                raise
            finally:
                pool.release(connection)

        return reply
