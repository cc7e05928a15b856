"""An in-memory StateStore with the same semantics as RedisStore, for unit and property tests.

It is not used in production: state must outlive the process and be shared between instances.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from consumer.state.store import Snapshot, Write, member_cid


class InMemoryStore:
    def __init__(self) -> None:
        self.states: dict[str, bytes] = {}
        self.expiry: dict[str, int] = {}
        self.journals: dict[str, dict[str, bytes]] = {}
        self.index: dict[str, int] = {}
        self.pending = 0
        self.held = 0
        self.round_trips = 0

    def read(self, journal_fields: Mapping[str, Sequence[str]]) -> dict[str, Snapshot]:
        self.round_trips += 1
        result = {}
        for cid, fields in journal_fields.items():
            journal = self.journals.get(cid, {})
            result[cid] = Snapshot(self.states.get(cid), {f: journal[f] for f in fields if f in journal})
        return result

    def write(self, writes: Sequence[Write]) -> list[bool]:
        self.round_trips += 1
        return [self._apply(w) for w in writes]

    def _apply(self, w: Write) -> bool:
        if self.states.get(w.cid) != w.old_blob:
            return False
        if w.new_blob is None:
            self.states.pop(w.cid, None)
            self.expiry.pop(w.cid, None)
        else:
            self.states[w.cid] = w.new_blob
            self.expiry[w.cid] = w.expire_at_ms
        if w.journal:
            self.journals.setdefault(w.cid, {}).update(w.journal)
        for member in w.index_remove:
            self.index.pop(member, None)
        for score, member in w.index_add:
            self.index[member] = score
        self.pending += w.pending_delta
        self.held += w.held_delta
        return True

    def forget_journal(self, entries: Mapping[str, Sequence[str]]) -> None:
        for cid, fields in entries.items():
            journal = self.journals.get(cid, {})
            for name in fields:
                journal.pop(name, None)
            if not journal:
                self.journals.pop(cid, None)

    def due(self, now_ms: int, limit: int) -> list[str]:
        self.round_trips += 1
        ready = sorted((score, member) for member, score in self.index.items() if score <= now_ms)
        return [member for _, member in ready[:limit]]

    def drop_index(self, members: Sequence[str]) -> None:
        for member in members:
            self.index.pop(member, None)

    def counts(self) -> tuple[int, int]:
        return self.pending, self.held

    def ping(self) -> None:
        return None

    def cids_indexed(self) -> set[str]:
        return {member_cid(m) for m in self.index}
