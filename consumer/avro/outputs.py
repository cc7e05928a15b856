"""Output records: the Avro payloads for the three output topics (contract section 4)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from consumer.avro.attributed_writer import LAYOUT, encode_attributed
from consumer.avro.codec import Codec
from consumer.avro.registry import SchemaRegistry
from consumer.avro.schemas import has_layout, schema_text
from consumer.config import Settings
from consumer.model import AttributedLead, SourceRecord, UnlinkedLead
from consumer.reasons import DeadLetterReason, Mode


def _millis(value: datetime | None) -> int | None:
    # fastavro reads timestamp-millis as aware datetimes; integer arithmetic keeps them exact.
    if value is None:
        return None
    return (value - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(slots=True, init=False)  # shaped for mypyc like the records of consumer/model.py
class Output:
    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone (the state changelog's deleted customer)
    source_timestamp_ms: int | None  # input record timestamp, for the latency histogram

    def __init__(
        self, topic: str, key: bytes | None, value: bytes | None, source_timestamp_ms: int | None = None
    ) -> None:
        self.topic = topic
        self.key = key
        self.value = value
        self.source_timestamp_ms = source_timestamp_ms


# Room beside LEADS_DEAD_LETTER_MAX_VALUE_BYTES for the rest of a dead letter (its fields, detail,
# topic name and the record's framing): the producer's message.max.bytes and the dead-letter
# topic's max.message.bytes must be at least their sum (consumer/app.py, consumer/preflight.py).
DEAD_LETTER_ENVELOPE_BYTES: Final = 10_000


class OutputCodecs:
    """Encoders for the output topics, in the configured wire format."""

    def __init__(self, settings: Settings, registry: SchemaRegistry | None = None) -> None:
        self.settings = settings

        def codec(name: str, topic: str) -> Codec:
            return Codec(name, registry, f"{topic}-value" if registry else None)

        self.attributed = codec("attributed_lead", settings.attributed_topic)
        self.unlinked = codec("unlinked_lead", settings.unlinked_topic)
        self.dead_letter = codec("dead_letter", settings.dead_letter_topic)
        # The hand-written encoder only while the schema is the one it was written for.
        self._fast = has_layout(json.loads(schema_text("attributed_lead")), LAYOUT)
        # The wire-format header (empty in the plain format), kept here: a call into the codec and a
        # copy of every record cost more than the header ever adds.
        self._attributed_header = self.attributed.frame(b"")

    def attributed_output(
        self, lead: AttributedLead, value: bytes, source_timestamp_ms: int | None
    ) -> Output:
        """The record to publish for ``lead``, whose bytes (attributed_value) are ``value``."""
        return Output(
            self.settings.attributed_topic, lead.customer_external_id.encode(), value, source_timestamp_ms
        )

    def attributed_value(self, lead: AttributedLead) -> bytes:
        """The record's bytes in the configured wire format (published, and journaled as is)."""
        if self._fast:
            body = encode_attributed(lead)
            return self._attributed_header + body if self._attributed_header else body
        return self.attributed.encode(self.attributed_record(lead))

    @staticmethod
    def attributed_record(lead: AttributedLead) -> dict[str, Any]:
        return {
            "leadId": lead.lead_id,
            "customerExternalId": lead.customer_external_id,
            "clickId": lead.click_id,
            "eventName": lead.event_name,
            "mode": lead.mode.value,
            "verificationEventName": lead.verification_event_name,
            "customerName": lead.customer_name,
            "customerEmail": lead.customer_email,
            "customerAvatar": lead.customer_avatar,
            "metadata": dict(lead.metadata) if lead.metadata is not None else None,
            "eventTimestamp": lead.event_timestamp_ms,
            "verifiedTimestamp": lead.verified_timestamp_ms,
            "attributedAt": lead.attributed_at_ms,
        }

    def decode_attributed(self, value: bytes) -> AttributedLead:
        """The inverse of attributed_output, for decisions replayed from the journal."""
        r = self.attributed.decode(value)
        return AttributedLead(
            lead_id=r["leadId"],
            customer_external_id=r["customerExternalId"],
            click_id=r["clickId"],
            event_name=r["eventName"],
            mode=Mode(r["mode"]),
            verification_event_name=r["verificationEventName"],
            customer_name=r["customerName"],
            customer_email=r["customerEmail"],
            customer_avatar=r["customerAvatar"],
            metadata=r["metadata"],
            event_timestamp_ms=_millis(r["eventTimestamp"]),
            verified_timestamp_ms=_millis(r["verifiedTimestamp"]),
            attributed_at_ms=_millis(r["attributedAt"]) or 0,
        )

    def changelog_output(self, cid: str, state: bytes | None) -> Output:
        """A customer's state as a batch left it, keyed by cid, for the compacted state changelog
        (consumer/state/changelog.py): the very bytes Redis holds (the state encoding,
        consumer/state/codec.py), or a tombstone once nothing is left."""
        return Output(self.settings.changelog_topic, cid.encode(), state)

    def unlinked_output(self, lead: UnlinkedLead) -> Output:
        record: dict[str, Any] = {
            "leadId": lead.lead_id,
            "customerExternalId": lead.customer_external_id,
            "reason": lead.reason.value,
            "eventName": lead.event_name,
            "clickId": lead.click_id,
            "customerName": lead.customer_name,
            "customerEmail": lead.customer_email,
            "customerAvatar": lead.customer_avatar,
            "metadata": dict(lead.metadata) if lead.metadata is not None else None,
            "eventTimestamp": lead.event_timestamp_ms,
            "detectedAt": lead.detected_at_ms,
        }
        return Output(
            self.settings.unlinked_topic, lead.customer_external_id.encode(), self.unlinked.encode(record)
        )

    def dead_letter_output(
        self, source: SourceRecord, reason: DeadLetterReason, detail: str, failed_at_ms: int
    ) -> Output:
        value, key = source.value, source.key
        # A record near the size limit, with the envelope around it, would not fit in the dead-letter
        # topic: the transaction would fail and the batch be replayed for ever (contract rule 6).
        # The key goes twice (the record's key and its field), so it counts twice against the room;
        # a key of more than a quarter of it (no cid is: they are at most 255 characters) keeps its
        # first bytes too, and the value gets the rest.
        limit = self.settings.dead_letter_max_value_bytes
        if key is not None and len(key) > limit // 4:
            detail = f"{detail}; key truncated to its first {limit // 4} of {len(key)} bytes"
            key = key[: limit // 4]
        room = limit - 2 * len(key or b"")
        truncated = len(value) > room
        kept = room
        record: dict[str, Any] = {
            "reason": reason.value,
            "detail": f"{detail}; value truncated to its first {kept} of {len(value)} bytes"
            if truncated
            else detail,
            "sourceTopic": source.topic,
            "sourcePartition": source.partition,
            "sourceOffset": source.offset,
            "key": key,
            "value": value[:kept] if truncated else value,
            "failedAt": failed_at_ms,
            "valueTruncated": truncated,
            "originalValueLength": len(value) if truncated else None,
            "originalValueSha256": hashlib.sha256(value).hexdigest() if truncated else None,
        }
        return Output(
            self.settings.dead_letter_topic, key, self.dead_letter.encode(record), source.timestamp_ms
        )
