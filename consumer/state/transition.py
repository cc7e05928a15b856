"""Turn (old state -> new state) into one compare-and-set Write for the store.

The wake entry and the counters are derived from the two states here, in one place, so the
pipeline and the expiry sweeper cannot disagree on how they are maintained.
"""

from __future__ import annotations

from collections.abc import Mapping

from consumer.state.codec import encode_state, is_current
from consumer.state.customer import CustomerState, PartitionKey, Write


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
    new_blob = None if new.is_empty() else encode_state(new)
    if new_blob is None and old_blob is None and not journal:
        return None
    wake = new.wake_ms()
    # A state keeps one live wake entry, for its wake time: a new one whenever that time moves.
    # The old entry stays and is dropped by the sweeper when its second comes. A state written
    # by a release before 0.2.0 has no entry (it had a TTL and item members in the old index).
    if wake is not None and wake == old.wake_ms() and old_blob is not None and is_current(old_blob):
        wake = None
    return Write(
        cid=cid,
        old_blob=old_blob,
        new_blob=new_blob,
        wake_ms=wake,
        journal=journal,
        pending_delta=len(new.pending) - len(old.pending),
        held_delta=len(new.held) - len(old.held),
    )
