"""Where customer state lives: the store protocol, and its Redis implementation.

Keys (all of one customer share the hash tag ``{cid}``, so each transition is one atomic script
on a single slot; see the README for the deadline index on Redis Cluster):

  <prefix>:s:{cid}   customer state, compact Avro (consumer/state/codec.py), with a TTL
  <prefix>:j:{cid}   journal: "partition:offset" -> the decision taken for that input record
  <prefix>:deadlines zset of "<due ms>:<cid>", scored by due time, for the expiry sweeper
  <prefix>:pending / <prefix>:held   counters behind the leads_pending gauges

A batch costs two commands: one script reads every state and journal entry of the batch, one
script writes every changed customer (a compare-and-set each) plus the journal clean-ups queued by
the previous batch. One command per batch rather than one per customer matters: the Python client
spends far more time per command than Redis does.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import redis
from redis.exceptions import NoScriptError


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
    def __init__(self, client: redis.Redis, prefix: str, journal_ttl_ms: int) -> None:
        self._r = client
        self._prefix = prefix
        self._journal_ttl_ms = journal_ttl_ms
        self._apply = _Script(client, "apply.lua")
        self._read = _Script(client, "read.lua")
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

    def read(self, journal_fields: Mapping[str, Sequence[str]]) -> dict[str, Snapshot]:
        if not journal_fields:
            return {}
        keys: list[str] = []
        args: list[Any] = []
        for cid, fields in journal_fields.items():
            keys += [self.state_key(cid), self.journal_key(cid)]
            args.append(len(fields))
            args += fields
        reply = self._read(keys, args)
        snapshots: dict[str, Snapshot] = {}
        position = 0
        for cid, fields in journal_fields.items():
            blob = reply[position] or None
            values = reply[position + 1 : position + 1 + len(fields)]
            position += 1 + len(fields)
            snapshots[cid] = Snapshot(blob, {f: v for f, v in zip(fields, values, strict=True) if v})
        return snapshots

    def write(self, writes: Sequence[Write]) -> list[bool]:
        if not writes and not self._queued_forget:
            return []
        journal_expire_at = int(time.time() * 1000) + self._journal_ttl_ms
        keys: list[str] = [self.index_key, self.pending_key, self.held_key]
        args: list[Any] = [len(writes), len(self._queued_forget)]
        for w in writes:
            keys += [self.state_key(w.cid), self.journal_key(w.cid)]
            args += [
                "-" if w.old_blob is None else b"=" + w.old_blob,
                w.new_blob or b"",
                w.expire_at_ms,
                journal_expire_at,
                w.pending_delta,
                w.held_delta,
                len(w.journal),
            ]
            for name, value in w.journal.items():
                args += [name, value]
            args.append(len(w.index_remove))
            args += w.index_remove
            args.append(len(w.index_add))
            for score, member in w.index_add:
                args += [score, member]
        for cid, fields in self._queued_forget.items():
            keys.append(self.journal_key(cid))
            args.append(len(fields))
            args += fields
        results = self._apply(keys, args)
        self._queued_forget = {}  # sent: committed entries are gone (or, on error, expire with their TTL)
        return [int(r) == 1 for r in results]

    def forget_journal(self, entries: Mapping[str, Sequence[str]]) -> None:
        """Queue deletion of committed journal entries; they ride along with the next write."""
        for cid, fields in entries.items():
            if fields:
                self._queued_forget.setdefault(cid, []).extend(fields)

    def due(self, now_ms: int, limit: int) -> list[str]:
        pipe = self._r.pipeline(transaction=False)
        if self._queued_drop:
            pipe.zrem(self.index_key, *self._queued_drop)
        pipe.zrangebyscore(self.index_key, "-inf", now_ms, start=0, num=limit)
        members = pipe.execute()[-1]
        self._queued_drop = []
        if self._queued_forget:
            self.write([])  # an idle consumer still forgets what it committed
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
        if self._queued_forget:
            self.write([])
        if self._queued_drop:
            self._r.zrem(self.index_key, *self._queued_drop)
            self._queued_drop = []


class _Script:
    """EVALSHA with a reload when Redis has forgotten the script (after a restart)."""

    def __init__(self, client: redis.Redis, name: str) -> None:
        self._r = client
        self._text = resources.files("consumer.state").joinpath(name).read_text()
        self._sha = ""

    def __call__(self, keys: list[str], args: list[Any]) -> Any:
        if not self._sha:
            self._sha = str(self._r.script_load(self._text))
        try:
            return self._r.evalsha(self._sha, len(keys), *keys, *args)
        except NoScriptError:
            # Nothing ran: EVALSHA failed before executing, so sending it again is safe.
            self._sha = ""
            return self(keys, args)
