"""Typed records that flow through the pipeline. Field names follow the Avro schemas.

These records, the state records (consumer/state/customer.py) and Output are never changed once
built: new ones are made (dataclasses.replace) instead. A dozen are built per event, so the ones
built per event are shaped for mypyc (setup.py): not frozen (a frozen dataclass is built through
object.__setattr__) and with their own __init__ (`init=False`: mypyc compiles a written __init__
to C, but runs the one dataclasses generates as Python, ~10x slower). Their repr, equality and
dataclasses.replace still come from @dataclass; tests/unit/test_build.py checks that each
__init__ takes every field, in order.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from consumer.reasons import DeadLetterReason, DuplicateKind, Mode, UnlinkedReason

# Fixed namespace for leadId: changing it would re-key every lead downstream.
LEAD_ID_NAMESPACE = uuid.UUID("6f1c1d2e-8a39-4a53-9f0e-6b3c9a4f2d10")
_NAMESPACE_SHA1: Final = hashlib.sha1(LEAD_ID_NAMESPACE.bytes)  # noqa: S324 - UUIDv5 is SHA-1 by definition


def lead_id(cid: str, click_id: str | None, event_name: str, reason: str = "") -> str:
    """Deterministic id (UUIDv5): the same lead always gets the same id, so readers can upsert.

    Each part is length-prefixed, so no two different tuples share a name: ("a", "bc") and
    ("ab", "c") would collide if the parts were only concatenated.
    """
    name = f"{len(cid)}:{cid}{len(click_id or '')}:{click_id or ''}{len(event_name)}:{event_name}{len(reason)}:{reason}"
    # uuid.uuid5, spelled out: the UUID object it builds cost more than the hash (profiled).
    sha = _NAMESPACE_SHA1.copy()  # the namespace hashed once: no lookup of SHA-1 by name per lead
    sha.update(name.encode())
    digest = bytearray(sha.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(slots=True, init=False)
class LeadEvent:
    """A validated input event (contract section 2), with clickId "" already folded to None."""

    customer_external_id: str
    event_name: str
    click_id: str | None
    deferred: bool
    timestamp_ms: int | None
    customer_name: str | None
    customer_email: str | None
    customer_avatar: str | None
    metadata: Mapping[str, str] | None

    def __init__(
        self,
        customer_external_id: str,
        event_name: str,
        click_id: str | None = None,
        deferred: bool = False,
        timestamp_ms: int | None = None,
        customer_name: str | None = None,
        customer_email: str | None = None,
        customer_avatar: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.customer_external_id = customer_external_id
        self.event_name = event_name
        self.click_id = click_id
        self.deferred = deferred
        self.timestamp_ms = timestamp_ms
        self.customer_name = customer_name
        self.customer_email = customer_email
        self.customer_avatar = customer_avatar
        self.metadata = metadata


@dataclass(slots=True, init=False)
class AttributedLead:
    lead_id: str
    customer_external_id: str
    click_id: str
    event_name: str
    mode: Mode
    verification_event_name: str | None
    customer_name: str | None
    customer_email: str | None
    customer_avatar: str | None
    metadata: Mapping[str, str] | None
    event_timestamp_ms: int | None
    verified_timestamp_ms: int | None
    attributed_at_ms: int

    def __init__(
        self,
        lead_id: str,
        customer_external_id: str,
        click_id: str,
        event_name: str,
        mode: Mode,
        verification_event_name: str | None,
        customer_name: str | None,
        customer_email: str | None,
        customer_avatar: str | None,
        metadata: Mapping[str, str] | None,
        event_timestamp_ms: int | None,
        verified_timestamp_ms: int | None,
        attributed_at_ms: int,
    ) -> None:
        self.lead_id = lead_id
        self.customer_external_id = customer_external_id
        self.click_id = click_id
        self.event_name = event_name
        self.mode = mode
        self.verification_event_name = verification_event_name
        self.customer_name = customer_name
        self.customer_email = customer_email
        self.customer_avatar = customer_avatar
        self.metadata = metadata
        self.event_timestamp_ms = event_timestamp_ms
        self.verified_timestamp_ms = verified_timestamp_ms
        self.attributed_at_ms = attributed_at_ms


@dataclass(slots=True)
class UnlinkedLead:
    lead_id: str
    customer_external_id: str
    reason: UnlinkedReason
    event_name: str
    click_id: str | None
    customer_name: str | None
    customer_email: str | None
    customer_avatar: str | None
    metadata: Mapping[str, str] | None
    event_timestamp_ms: int | None
    detected_at_ms: int


@dataclass(slots=True, init=False)
class Decision:
    """What the rules decided for one input event. At most one of the first three is set;
    none set means the event only changed state (a pending lead stored, an Event 2 held)."""

    attributed: AttributedLead | None
    dead_letter: DeadLetterReason | None
    duplicate: DuplicateKind | None
    detail: str
    verification_delay_ms: int | None
    decided_at_ms: int

    def __init__(
        self,
        attributed: AttributedLead | None = None,
        dead_letter: DeadLetterReason | None = None,
        duplicate: DuplicateKind | None = None,
        detail: str = "",
        verification_delay_ms: int | None = None,
        decided_at_ms: int = 0,
    ) -> None:
        self.attributed = attributed
        self.dead_letter = dead_letter
        self.duplicate = duplicate
        self.detail = detail
        self.verification_delay_ms = verification_delay_ms
        self.decided_at_ms = decided_at_ms


@dataclass(slots=True)
class Invalid:
    """An input record that failed decoding or validation."""

    reason: DeadLetterReason
    detail: str


@dataclass(slots=True, init=False)
class SourceRecord:
    """The coordinates and bytes of one consumed record, kept for dead letters and commits."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int | None

    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes,
        timestamp_ms: int | None = None,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.timestamp_ms = timestamp_ms
