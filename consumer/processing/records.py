"""The pipeline's front, before any state: consumed Kafka messages as SourceRecords, and each
record decoded (Avro) and validated into a LeadEvent or an Invalid with its dead-letter reason.
Compiled (setup.py): every input record passes here once."""

from __future__ import annotations

from collections.abc import Sequence

from confluent_kafka import Message

from consumer import metrics
from consumer.avro.bounds import Unbounded
from consumer.avro.codec import Codec
from consumer.avro.lead_reader import Unusual, read_fields
from consumer.avro.registry import UnknownSchema
from consumer.model import Invalid, LeadEvent, SourceRecord
from consumer.reasons import DeadLetterReason
from consumer.rules.validate import validate, validate_fields


def source_records(messages: Sequence[Message]) -> tuple[list[SourceRecord], list[Message]]:
    """Consumed messages as the pipeline's records, and the events consume() returned among them
    (errors, and the end of a partition reached). Compiled (setup.py): ~1,000 messages a batch,
    eight calls each."""
    sources: list[SourceRecord] = []
    events: list[Message] = []
    for message in messages:
        if message.error() is not None:
            events.append(message)
            continue
        timestamp_type, timestamp = message.timestamp()
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None  # set on every record
        value = message.value()
        sources.append(
            SourceRecord(
                topic,
                partition,
                offset,
                message.key(),
                value if value is not None else b"",
                timestamp if timestamp_type else None,
            )
        )
    return sources, events


def parse(decoder: Codec, source: SourceRecord) -> LeadEvent | Invalid:
    decode = decoder.decode
    if decoder.reads_fields:  # the plain LeadEvent layout: fields straight from the bytes
        try:
            cid, name, click, mode, timestamp, customer, email, avatar, metadata = read_fields(source.value)
        except Unusual:
            decode = decoder.decode_generic  # fastavro judges it, as it always did
        else:
            return validate_fields(cid, name, click, mode, timestamp, customer, email, avatar, metadata)
    try:
        record = decode(source.value)
    except OSError:
        raise  # a schema registry outage is not the record's fault: let the run loop retry
    except UnknownSchema as error:
        metrics.SCHEMA_REGISTRY_ERRORS.labels("unknown_schema").inc()
        return Invalid(DeadLetterReason.UNDECODABLE, str(error))
    except Unbounded as error:  # the message names the bound, never a value
        return Invalid(DeadLetterReason.UNDECODABLE, f"not decoded: {error}")
    except Exception as error:
        return Invalid(DeadLetterReason.UNDECODABLE, f"not Avro of LeadEvent: {type(error).__name__}")
    if not isinstance(record, dict):
        return Invalid(DeadLetterReason.UNDECODABLE, "not an Avro record")
    return validate(record)
