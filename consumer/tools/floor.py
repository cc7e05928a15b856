"""`leadattr clear-offset-floor`: before a deliberate replay of input, forget the committed offsets
this group's consumers keep in Redis (the committed-offset floor), so that offsets reset to
earlier positions are replayed instead of skipped. Stop the consumers first."""

from __future__ import annotations

import sys

from consumer.config import Config
from consumer.state.connection import redis_of
from consumer.state.redis_store import RedisStore


def clear_offset_floor(config: Config, dry_run: bool) -> int:
    s = config.settings
    client = redis_of(s)
    store = RedisStore(client, s.redis_prefix, journal_ttl_ms=0, group=s.consumer_group)
    floor = store.committed_floor()
    shown = ", ".join(f"{member}={offset}" for member, offset in sorted(floor.items())) or "none"
    print(f"committed-offset floor of group {s.consumer_group}: {shown}", file=sys.stderr)
    if not dry_run and floor:
        store.clear_committed_floor()
        print("cleared: the group's committed offsets in Kafka are all that count now", file=sys.stderr)
    return 0
