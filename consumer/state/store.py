"""Where customer state lives: the store protocol, and its Redis implementation.

Keys (all of one customer share the hash tag ``{cid}``, so each transition is one atomic script
on a single slot; see the README for the deadline index on Redis Cluster):

  <prefix>:s:{cid}   customer state, compact Avro (consumer/state/codec.py), with a TTL
  <prefix>:j:{cid}   journal: "partition:offset" -> the decision taken for that input record
  <prefix>:deadlines zset of "<due ms>:<cid>", scored by due time, for the expiry sweeper
  <prefix>:pending / <prefix>:held   counters behind the leads_pending gauges

A batch costs one round trip to read (states + journal entries, plus the clean-ups queued by the
previous batch) and one to write (one compare-and-set script per customer, pipelined).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import redis
from redis.exceptions import NoScriptError

_SCRIPT = resources.files("consumer.state").joinpath("apply.lua").read_text()


@dataclass(frozen=True, slots=True)
class Snapshot:
    blob: bytes | None
    journal: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Write:
    """Replace one customer's state if it is still ``old_blob`` (compare-and-set)."""

    cid: str
    old_blob: bytes | None
    new_blob: bytes | None  # None deletes the key
    expire_at_ms: int
    journal: Mapping[str, bytes] = field(default_factory=dict)
    index_remove: Sequence[str] = ()
    index_add: Sequence[tuple[int, str]] = ()
    pending_delta: int = 0
    held_delta: int = 0


def index_member(due_ms: int, cid: str) -> str:
    return f"{due_ms}:{cid}"


def member_cid(member: str) -> str:
    return member.split(":", 1)[1]


class StateStore(Protocol):
    """What the pipeline and the sweeper need from state storage; Redis or in-memory."""

    def read(self, journal_fields: Mapping[str, Sequence[str]]) -> dict[str, Snapshot]: ...

    def write(self, writes: Sequence[Write]) -> list[bool]: ...

    def forget_journal(self, entries: Mapping[str, Sequence[str]]) -> None: ...

    def due(self, now_ms: int, limit: int) -> list[str]: ...

    def drop_index(self, members: Sequence[str]) -> None: ...

    def counts(self) -> tuple[int, int]: ...

    def ping(self) -> None: ...


class RedisStore:
    def __init__(self, client: redis.Redis[bytes], prefix: str, journal_ttl_ms: int) -> None:
        self._r = client
        self._prefix = prefix
        self._journal_ttl_ms = journal_ttl_ms
        self._sha = ""
        self._queued_forget: dict[str, list[str]] = {}
        self._queued_drop: list[str] = []
        self.index_key = f"{prefix}:deadlines"
        self.pending_key = f"{prefix}:pending"
        self.held_key = f"{prefix}:held"

    @classmethod
    def from_url(cls, url: str, prefix: str, journal_ttl_ms: int) -> RedisStore:
        # Short timeouts: an unreachable Redis must surface as an error the run loop can back off on,
        # not as a consumer hung past max.poll.interval.ms.
        client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30
        )
        return cls(client, prefix, journal_ttl_ms)

    def state_key(self, cid: str) -> str:
        return f"{self._prefix}:s:{{{cid}}}"

    def journal_key(self, cid: str) -> str:
        return f"{self._prefix}:j:{{{cid}}}"

    def _flush_queued(self, pipe: Any) -> None:
        """Clean-ups from the previous batch ride along with this round trip instead of costing one."""
        for cid, fields in self._queued_forget.items():
            pipe.hdel(self.journal_key(cid), *fields)
        if self._queued_drop:
            pipe.zrem(self.index_key, *self._queued_drop)

    def _queued_count(self) -> int:
        return len(self._queued_forget) + (1 if self._queued_drop else 0)

    def read(self, journal_fields: Mapping[str, Sequence[str]]) -> dict[str, Snapshot]:
        pipe = self._r.pipeline(transaction=False)
        self._flush_queued(pipe)
        for cid, fields in journal_fields.items():
            pipe.get(self.state_key(cid))
            if fields:
                pipe.hmget(self.journal_key(cid), list(fields))
        replies = pipe.execute()[self._queued_count() :]
        self._queued_forget, self._queued_drop = {}, []
        snapshots: dict[str, Snapshot] = {}
        position = 0
        for cid, fields in journal_fields.items():
            blob = replies[position]
            position += 1
            journal: dict[str, bytes] = {}
            if fields:
                journal = {f: v for f, v in zip(fields, replies[position], strict=True) if v is not None}
                position += 1
            snapshots[cid] = Snapshot(blob, journal)
        return snapshots

    def _args(self, w: Write) -> list[Any]:
        args: list[Any] = [
            "-" if w.old_blob is None else b"=" + w.old_blob,
            w.new_blob or b"",
            w.expire_at_ms,
            w.expire_at_ms if not w.journal else _now_plus(self._journal_ttl_ms),
            w.pending_delta,
            w.held_delta,
            len(w.journal),
        ]
        for name, value in w.journal.items():
            args += [name, value]
        args.append(len(w.index_remove))
        args += list(w.index_remove)
        args.append(len(w.index_add))
        for score, member in w.index_add:
            args += [score, member]
        return args

    def write(self, writes: Sequence[Write]) -> list[bool]:
        if not writes:
            return []
        if not self._sha:
            self._sha = str(self._r.script_load(_SCRIPT))  # type: ignore[no-untyped-call]
        pipe = self._r.pipeline(transaction=False)
        for w in writes:
            keys = [
                self.state_key(w.cid),
                self.journal_key(w.cid),
                self.index_key,
                self.pending_key,
                self.held_key,
            ]
            pipe.evalsha(self._sha, len(keys), *keys, *self._args(w))
        replies = pipe.execute(raise_on_error=False)
        if any(isinstance(r, NoScriptError) for r in replies):
            # Redis restarted and lost its script cache; nothing ran (EVALSHA failed), so redo it all.
            self._sha = ""
            return self.write(writes)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return [int(r) == 1 for r in replies]

    def forget_journal(self, entries: Mapping[str, Sequence[str]]) -> None:
        for cid, fields in entries.items():
            self._queued_forget.setdefault(cid, []).extend(fields)

    def due(self, now_ms: int, limit: int) -> list[str]:
        pipe = self._r.pipeline(transaction=False)
        self._flush_queued(pipe)
        pipe.zrangebyscore(self.index_key, "-inf", now_ms, start=0, num=limit)
        members = pipe.execute()[-1]
        self._queued_forget, self._queued_drop = {}, []
        return [m.decode() for m in members]

    def drop_index(self, members: Sequence[str]) -> None:
        self._queued_drop.extend(members)

    def counts(self) -> tuple[int, int]:
        pending, held = self._r.mget([self.pending_key, self.held_key])
        return int(pending or 0), int(held or 0)

    def ping(self) -> None:
        self._r.ping()

    def flush_queued(self) -> None:
        """Send queued clean-ups now (on shutdown, so the journal does not wait for its TTL)."""
        if self._queued_count():
            pipe = self._r.pipeline(transaction=False)
            self._flush_queued(pipe)
            pipe.execute()
            self._queued_forget, self._queued_drop = {}, []


def _now_plus(ms: int) -> int:
    return int(time.time() * 1000) + ms
