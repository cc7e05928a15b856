"""`leadattr tail`: the committed records of a topic, decoded, as JSON lines on stdout.

`leadattr tail attributed` prints the last 10 records; `-n N` the last N (by timestamp, across
partitions), `--from-beginning` all of them, `--follow` keeps printing new ones until Ctrl-C, and
`--cid CID` keeps only one customer's (the dead letters: by their key). The topic is one of
`attributed`, `unlinked`, `dead-letter`, `input`, `erasures` or one of their topic names (the state
changelog holds internal state blobs, read by `inspect` and `restore-state`, not here); records
are read read_committed (what analytics pipelines see), in the configured wire format (plain Avro
or the registry's framing). Each line carries `_topic`, `_partition`, `_offset`, `_timestamp` and
`_key`; bytes (a dead letter's original value) are base64. It joins no group and commits nothing.
"""

from __future__ import annotations

import base64
import json
import sys
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, Message, TopicPartition

from consumer.avro.codec import Codec
from consumer.avro.registry import registry_of
from consumer.config import Settings

_IDLE_S = 1.0  # without --follow: stop once every partition was read to its end and this passed


def resolve(s: Settings, name: str) -> tuple[str, str]:
    """(topic, schema) for a short name or a topic of the service."""
    by_name = {
        "attributed": (s.attributed_topic, "attributed_lead"),
        "unlinked": (s.unlinked_topic, "unlinked_lead"),
        "dead-letter": (s.dead_letter_topic, "dead_letter"),
        "input": (s.input_topic, "lead_event"),
        "erasures": (s.erasure_topic, "erasure"),
    }
    if name in by_name:
        return by_name[name]
    for topic, schema in by_name.values():
        if name == topic:
            return topic, schema
    raise ValueError(
        f"{name}: not a topic of the service "
        "(attributed, unlinked, dead-letter, input, erasures, or their topic names)"
    )


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _line(message: Message, decode: Callable[[bytes], Any]) -> dict[str, Any]:
    try:
        record: dict[str, Any] = dict(decode(message.value() or b""))
    except Exception as error:
        record = {"_undecodable": type(error).__name__}
    key = message.key()
    record.update(
        _topic=message.topic(),
        _partition=message.partition(),
        _offset=message.offset(),
        _timestamp=message.timestamp()[1],
        _key=key.decode("utf-8", "replace") if key is not None else None,
    )
    return record


def _matches(record: dict[str, Any], cid: str | None) -> bool:
    return cid is None or record.get("customerExternalId", record.get("_key")) == cid


def tail(
    s: Settings,
    base: dict[str, Any],
    name: str,
    last: int = 10,
    from_beginning: bool = False,
    follow: bool = False,
    cid: str | None = None,
    out: TextIO = sys.stdout,
) -> int:
    topic, schema = resolve(s, name)
    codec = Codec(schema, registry_of(s))
    consumer = Consumer(
        {
            **base,
            "group.id": f"{s.consumer_group}-tail-{uuid.uuid4().hex[:8]}",  # never joined, never committed
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    try:
        partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        starts = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if from_beginning:
                starts.append(TopicPartition(topic, partition, OFFSET_BEGINNING))
            elif last > 0:
                starts.append(TopicPartition(topic, partition, max(low, high - last)))
            else:
                starts.append(TopicPartition(topic, partition, OFFSET_END))
        consumer.assign(starts)
        _read(consumer, codec.decode, partitions, follow, cid, out, None if from_beginning else last)
    finally:
        consumer.close()
    return 0


def _read(
    consumer: Consumer,
    decode: Callable[[bytes], Any],
    partitions: list[int],
    follow: bool,
    cid: str | None,
    out: TextIO,
    last: int | None,
) -> None:
    ended: set[int] = set()
    held: list[dict[str, Any]] = []  # the backlog, printed sorted once read (the last N of it)
    backlog = True
    quiet_since = time.monotonic()
    while True:
        messages = consumer.consume(500, 0.5)
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    ended.add(message.partition() or 0)
                    continue
                raise RuntimeError(f"reading: {error.str()}")
            record = _line(message, decode)
            if not _matches(record, cid):
                continue
            if backlog:
                held.append(record)
            else:
                out.write(json.dumps(_plain(record)) + "\n")
                out.flush()
        if messages:
            quiet_since = time.monotonic()
        if backlog and (len(ended) == len(partitions) or time.monotonic() - quiet_since > _IDLE_S * 5):
            backlog = False
            held.sort(key=lambda r: (r["_timestamp"], r["_partition"], r["_offset"]))
            for record in held[-last:] if last else held:
                out.write(json.dumps(_plain(record)) + "\n")
            out.flush()
            if not follow:
                return
