"""Turn (old state -> new state) into one compare-and-set Write for the store.

The deadline index and the counters are derived from the two states here, in one place, so the
pipeline and the expiry sweeper cannot disagree on how they are maintained.
"""

from __future__ import annotations

from collections.abc import Mapping

from consumer.state.codec import encode_state
from consumer.state.model import CustomerState
from consumer.state.store import PartitionKey, Write, index_member


def _members(cid: str, state: CustomerState) -> set[tuple[int, str]]:
    return {(item.due_ms, index_member(item.due_ms, cid)) for item in state.items()}


def plan_write(
    cid: str,
    old_blob: bytes | None,
    old: CustomerState,
    new: CustomerState,
    journal: Mapping[PartitionKey, bytes],
) -> Write | None:
    """None when nothing changed and nothing needs journaling (no round trip spent on it)."""
    if not journal and (new is old or new == old):
        return None
    before: set[tuple[int, str]] = set()
    after: set[tuple[int, str]] = set()
    if new.pending is not old.pending or new.held is not old.held:  # else no deadline moved
        before, after = _members(cid, old), _members(cid, new)
    new_blob = None if new.is_empty() else encode_state(new)
    if new_blob is None and old_blob is None and not journal:
        return None
    return Write(
        cid=cid,
        old_blob=old_blob,
        new_blob=new_blob,
        expire_at_ms=new.expires_at_ms(),
        journal=journal,
        index_remove=sorted(m for _, m in before - after) if before else (),
        index_add=sorted(after - before) if after else (),
        pending_delta=len(new.pending) - len(old.pending),
        held_delta=len(new.held) - len(old.held),
    )
