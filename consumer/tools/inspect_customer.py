"""`leadattr inspect CID`: one customer's state as the service sees it, as JSON on stdout.

The pending leads (clickId, eventName, when they arrived and when they fall due, claimed by a
sweeper or not), the held verifications (an Event 2 that came before its Event 1), the dedupe marks
with their end times, and whether the customer is in the wake index (its next sweep). Times are
arrival times (the input records' Kafka timestamps, ISO 8601 UTC). The customer's name and email
are masked unless --show-pii (the avatar URL and metadata too: they may hold either). Exit 1 when
the service holds nothing for the customer: together with `leadattr tail --cid` it answers "why was
this lead not attributed".
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from consumer.config import Settings
from consumer.state.codec import CorruptState, decode_state
from consumer.state.connection import redis_of
from consumer.state.customer import EMPTY
from consumer.state.keys import quarantine_key, state_key

_MASK = "***"


def _when(ms: int | None) -> str | None:
    if not ms:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def _mask(value: Any, show: bool) -> Any:
    return value if show or value is None else _MASK


def describe(s: Settings, cid: str, show_pii: bool = False) -> dict[str, Any] | None:
    client = redis_of(s)
    try:
        key = state_key(s.redis_prefix, cid)
        blob = client.get(key)
        aside: dict[bytes, bytes] = client.hgetall(quarantine_key(s.redis_prefix, cid))  # type: ignore[assignment]
        if not isinstance(blob, bytes) and not aside:  # no state
            return None
        unreadable = None
        try:
            state = decode_state(blob if isinstance(blob, bytes) else None)
        except CorruptState as error:  # the next event or sweep of the customer moves it aside
            state, unreadable = EMPTY, str(error)
        return {
            "customerExternalId": cid,  # the operator's own argument
            "redisKey": key,
            "unreadable": unreadable,
            # Blobs kept aside (consumer/processing/quarantine.py): SHA-256 prefix -> size in bytes.
            "quarantined": {name.decode(): len(value) for name, value in sorted(aside.items())},
            "pending": [
                {
                    "clickId": p.click_id,
                    "eventName": p.event_name,
                    "arrivedAt": _when(p.created_ms),
                    "fallsDueAt": _when(p.deadline_ms),
                    "claimedBySweeperUntil": _when(p.lease_until_ms),
                    "customerName": _mask(p.customer_name, show_pii),
                    "customerEmail": _mask(p.customer_email, show_pii),
                    "customerAvatar": _mask(p.customer_avatar, show_pii),
                    "metadata": _mask(dict(p.metadata) if p.metadata else None, show_pii),
                }
                for p in state.pending
            ],
            "heldVerifications": [
                {
                    "eventName": h.event_name,
                    "arrivedAt": _when(h.created_ms),
                    "fallsDueAt": _when(h.deadline_ms),
                    "claimedBySweeperUntil": _when(h.lease_until_ms),
                    "customerName": _mask(h.customer_name, show_pii),
                    "customerEmail": _mask(h.customer_email, show_pii),
                }
                for h in state.held
            ],
            "dedupe": {name: _when(until) for name, until in sorted(state.done.items())},
            "verificationsDuplicateUntil": _when(state.verified_until_ms),
        }
    finally:
        client.close()


def inspect(s: Settings, cid: str, show_pii: bool, out: TextIO = sys.stdout) -> int:
    found = describe(s, cid, show_pii)
    if found is None:
        print("leadattr inspect: the service holds no state for this customer", file=sys.stderr)
        return 1
    out.write(json.dumps(found, indent=2) + "\n")
    return 0
