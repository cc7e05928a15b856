"""A customer state that cannot be read is moved aside, never a crash and never lost.

A bad restore, a hand edit or another program's key under the prefix can leave bytes this release
cannot decode. Raising would end the process at the next event of that customer (and every sweeper
at its wake time), on every instance, for ever. Instead the blob is copied to the customer's
quarantine hash (<prefix>:q:{cid}, consumer/state/keys.py), where an operator finds it, and the
caller deletes the state with its usual compare-and-set write: the batch dead-letters the
customer's events of that batch as ``corrupt_state`` (journaled like every decision, so a replay
re-emits the same), and the sweeper drops the wake entry. Every other customer flows meanwhile.
The next event of the customer starts from no state. `leadattr forget` erases the quarantine hash
with the rest of the customer.
"""

from __future__ import annotations

import logging
from typing import Final

from consumer import metrics
from consumer.state.codec import CorruptState, decode_state
from consumer.state.customer import CustomerState
from consumer.state.store import StateStore

log = logging.getLogger(__name__)

DETAIL: Final = "the customer's stored state could not be read ({}); it was moved aside to its quarantine key"


def readable(store: StateStore, cid: str, blob: bytes | None, stage: str) -> CustomerState | CorruptState:
    """The state in ``blob``, or the reason it cannot be read, once the blob is kept aside.
    ``stage``: the label of leads_state_quarantined_total ("batch" or "sweeper")."""
    try:
        return decode_state(blob)
    except CorruptState as error:
        assert blob is not None  # no blob decodes to the empty state
        if store.quarantine(cid, blob):
            metrics.STATE_QUARANTINED.labels(stage).inc()
            # Once per distinct blob (a replay finds it kept), and never the customer id: the
            # dead letters (batch) and `SCAN 0 MATCH <prefix>:q:*` name the customer.
            log.error(
                "an unreadable customer state (%s) was moved aside to its quarantine key (found by the %s)",
                error,
                stage,
            )
        return error
