"""`leadattr forget CID`: erase everything the service holds for one customer (an erasure request).

What it removes, in this order (docs/operations.md, "Erasure"):

1. The customer's state in Redis (pending leads with name and email, held verifications, dedupe
   marks), by a compare-and-set delete through apply.lua, the script every writer uses, with the
   pending/held counters adjusted in the same step, and any unreadable state of the customer kept
   aside (<prefix>:q:{cid}, consumer/processing/quarantine.py). A batch of a running consumer that read the
   state before loses its own compare-and-set and decides again on no state, so nothing it read
   is written back. A lead a sweeper has claimed for reporting is waited for (its lease).
2. The cid in the wake index (the sweeper's lists, one per second) and in the index of releases
   before 0.2.0: each entry is blanked in place, so positions, which the sweeper acknowledges
   by, stay as they were.
3. The customer in the state changelog, by a tombstone (compaction then drops the older records:
   the topic's max.compaction.lag.ms bounds when). It is written once every transaction open on
   the changelog has ended, so no batch that saw the old state commits after it, and written again
   with what Redis holds if a later event gave the customer new state meanwhile.
4. An erasure record (schemas/erasure.avsc) on LEADS_ERASURE_TOPIC, keyed by cid, in the same
   produce as the tombstone: the signal for the pipelines downstream to delete the customer's
   attributed and unlinked records, which this service cannot reach.

It is idempotent: a second run finds nothing, and publishes another erasure record with
heldState false. The count is kept in Redis (<prefix>:erasures); the consumers export it as
leads_erasures_total. Its log lines never carry the cid.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer
from redis import Redis

from consumer import logs
from consumer.app import cluster_config
from consumer.avro.codec import Codec
from consumer.avro.registry import registry_of
from consumer.config import Config
from consumer.rules.validate import MAX_CID
from consumer.state.changelog import ChangelogReader
from consumer.state.codec import CorruptState, decode_state
from consumer.state.connection import redis_of
from consumer.state.customer import EMPTY, Write
from consumer.state.keys import erasures_key, quarantine_key
from consumer.state.redis_store import RedisStore
from consumer.state.scripts import script_text

log = logging.getLogger("leadattr.forget")

_TRIES = 20  # compare-and-set conflicts with running consumers, changelog rounds
_WAKE_CHUNK = 500  # wake lists per call of wake_erase.lua


@dataclass(frozen=True)
class Forgotten:
    held_state: bool  # the service held state for the customer
    wake_entries: int  # wake index entries blanked
    erased_at_ms: int


def _stored(store: RedisStore, cid: str) -> bytes | None:
    blob = store.client.get(store.state_key(cid))
    return blob if isinstance(blob, bytes) else None


def _now_ms(client: Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _delete_state(store: RedisStore, cid: str, lease_wait_s: float) -> bool:
    """Step 1: True when there was state. Retries lost compare-and-sets (a batch wrote first)."""
    client = store.client
    deadline = time.monotonic() + lease_wait_s
    conflicts = 0  # waiting for a lease is bounded by the deadline, not by this
    while conflicts < _TRIES:
        blob = _stored(store, cid)
        if blob is None:
            return False
        try:
            state = decode_state(blob)
        except CorruptState:  # unreadable: its items and counts unknown; deleted all the same
            state = EMPTY
        now_ms = _now_ms(client)
        leases = [p.lease_until_ms for p in state.pending] + [h.lease_until_ms for h in state.held]
        leased = [until for until in leases if until > now_ms]
        if leased and time.monotonic() < deadline:
            # A sweeper is publishing this item's unlinked record: let it finish (and release it),
            # so that the record is out before the erasure record, never after.
            time.sleep(min(0.5, (max(leased) - now_ms) / 1000 + 0.05))
            continue
        write = Write(cid, blob, None, pending_delta=-len(state.pending), held_delta=-len(state.held))
        if store.write([write]) == [True]:
            return True
        conflicts += 1
    raise RuntimeError("the customer's state kept changing; nothing published, run forget again")


def _blank_wake_entries(store: RedisStore, cid: str) -> int:
    """Step 2."""
    client = store.client
    script = client.register_script(script_text("wake_erase.lua"))
    seconds = [int(second) for second in client.zrange(store.wake_key, 0, -1)]  # type: ignore[arg-type]
    blanked = 0
    for start in range(0, len(seconds), _WAKE_CHUNK):
        keys = [store.wake_list_key(second) for second in seconds[start : start + _WAKE_CHUNK]]
        blanked += int(script(keys=keys, args=[cid]))
    legacy = [m for m, _ in client.zscan_iter(store.legacy_index_key, match=f"*:{_glob(cid)}")]
    if legacy:
        blanked += int(client.zrem(store.legacy_index_key, *legacy))
    return blanked


def _glob(text: str) -> str:
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _publish(config: Config, store: RedisStore, cid: str, record: dict[str, Any]) -> None:
    """Steps 3 and 4: the tombstone and the erasure record, then the changelog kept equal to what
    Redis holds for the customer (a later event's state written meanwhile)."""
    s = config.settings
    registry = registry_of(s)
    codec = Codec("erasure", registry, f"{s.erasure_topic}-value" if registry else None)
    producer = Producer({**cluster_config(config, "forget"), "enable.idempotence": True, "acks": "all"})
    reader = ChangelogReader(cluster_config(config, "forget"), s.changelog_topic, s.consumer_group)
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    try:
        key = cid.encode()
        state: bytes | None = None
        for round_ in range(_TRIES):
            reader.settled_ends()  # every batch that saw an older state has committed or aborted
            producer.produce(s.changelog_topic, key=key, value=state, on_delivery=on_delivery)
            if round_ == 0:
                producer.produce(
                    s.erasure_topic, key=key, value=codec.encode(record), on_delivery=on_delivery
                )
            if producer.flush(30) or failures:
                raise RuntimeError(f"not delivered: {failures[:1] or 'timed out'}")
            current = _stored(store, cid)
            # Unchanged since before the settle: a batch writing a newer state writes Redis after
            # this read, so its changelog record comes after the one just written.
            if current == state:
                return
            state = current
        raise RuntimeError("the customer's state kept changing; run forget again")
    finally:
        reader.close()


def forget(config: Config, cid: str, request_id: str | None = None) -> Forgotten:
    s = config.settings
    store = RedisStore(
        redis_of(s),
        s.redis_prefix,
        journal_ttl_ms=0,
        group=s.consumer_group,
        min_replicas=s.min_replicas,
        replica_timeout_ms=s.redis_replica_timeout_ms,
    )
    try:
        held = _delete_state(store, cid, lease_wait_s=s.expiry_lease_seconds + 5)
        held = bool(store.client.delete(quarantine_key(s.redis_prefix, cid))) or held  # states moved aside
        blanked = _blank_wake_entries(store, cid)
        erased_at_ms = _now_ms(store.client)
        record = {
            "customerExternalId": cid,
            "requestId": request_id,
            "heldState": held,
            "erasedAt": erased_at_ms,
        }
        _publish(config, store, cid, record)
        store.client.incrby(erasures_key(s.redis_prefix), 1)
    finally:
        store.client.close()
    log.info("customer erased", extra=logs.fields(held_state=held, wake_entries=blanked))
    return Forgotten(held, blanked, erased_at_ms)


def forget_command(config: Config, cid: str, request_id: str | None) -> int:
    if not 1 <= len(cid) <= MAX_CID:
        print(f"leadattr forget: CID must be 1..{MAX_CID} characters (a customerExternalId)", file=sys.stderr)
        return 2
    done = forget(config, cid, request_id)
    held = "its state erased" if done.held_state else "no state held"
    print(
        f"forgot the customer: {held}, {done.wake_entries} wake entries blanked, "
        f"tombstone on {config.settings.changelog_topic}, erasure record on {config.settings.erasure_topic}",
        file=sys.stderr,
    )
    return 0
