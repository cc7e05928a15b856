"""`leadattr send`: publish lead events written as JSON, as Avro keyed by customerExternalId.

Only the schema is checked here (types and required fields), so that teams can also send events
the consumer will dead-letter, e.g. to test their own error handling.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

from confluent_kafka import Producer

from consumer.avro.codec import Codec
from consumer.avro.registry import registry_of
from consumer.config import Config
from consumer.tools.progress import Progress


class PayloadError(ValueError):
    """A payload does not fit the LeadEvent schema; the message names the field."""


_REQUIRED = ("customerExternalId", "eventName")
_OPTIONAL_STRINGS = ("clickId", "mode", "timestamp", "customerName", "customerEmail", "customerAvatar")


def check_payload(payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise PayloadError("payload: must be a JSON object")
    unknown = sorted(set(payload) - {*_REQUIRED, *_OPTIONAL_STRINGS, "metadata"})
    if unknown:
        raise PayloadError(f"{unknown[0]}: not a field of LeadEvent")
    for name in _REQUIRED:
        if not isinstance(payload.get(name), str):
            raise PayloadError(f"{name}: required, must be a string")
    for name in _OPTIONAL_STRINGS:
        if payload.get(name) is not None and not isinstance(payload[name], str):
            raise PayloadError(f"{name}: must be a string or null")
    metadata = payload.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise PayloadError("metadata: must be an object of strings or null")
    return {name: payload.get(name) for name in (*_REQUIRED, *_OPTIONAL_STRINGS, "metadata")}


def parse_lines(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) for each non-blank line; raises PayloadError naming line and field."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            payload = json.loads(line)
        except json.JSONDecodeError as error:
            raise PayloadError(f"line {number}: not JSON ({error.msg})") from None
        try:
            yield number, check_payload(payload)
        except PayloadError as error:
            raise PayloadError(f"line {number}: {error}") from None


def send(config: Config, records: list[dict[str, Any]], topic: str | None = None) -> int:
    s = config.settings
    registry = registry_of(s)
    target = topic or s.input_topic
    codec = Codec("lead_event", registry, f"{target}-value" if registry else None)
    producer = Producer(
        {"bootstrap.servers": s.kafka_bootstrap_servers, "enable.idempotence": True, **config.kafka_extra}
    )
    failures: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            failures.append(err.str())

    progress = Progress(f"sending to {target}", len(records))
    for count, record in enumerate(records, 1):
        while True:
            try:
                producer.produce(
                    target,
                    key=record["customerExternalId"].encode(),
                    value=codec.encode(record),
                    on_delivery=on_delivery,
                )
                break
            except BufferError:  # librdkafka's queue is full (a large file): let it drain
                producer.poll(0.1)
        producer.poll(0)
        progress.update(count)
    remaining = producer.flush(30)
    progress.done()
    if remaining or failures:
        raise RuntimeError(f"{remaining + len(failures)} events not delivered: {failures[:1]}")
    return len(records)
