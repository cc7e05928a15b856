"""A realistic stream of lead events, pre-encoded as Avro and keyed by customerExternalId.

Mix, as a share of *events* (issue 6): 40 % direct leads, 35 % deferred pairs (Event 1 then its
verification a little later, so 17.5 % of each), 10 % deferred Event 1s never verified (they stay
pending in Redis), 10 % verification events without an Event 1 (held for the grace period), 5 %
invalid records (undecodable bytes, a bad email, an unknown mode, a deferred event without
clickId, an over-long clickId). Field sizes follow what product services send: uuid clickIds,
"usr_" + 16 hex customer ids, real-looking names and emails, https avatar URLs on a CDN, three or
four utm_* metadata entries and ISO 8601 timestamps with milliseconds.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from consumer.avro.varint import uvarint, zigzag


class Kind(StrEnum):
    DIRECT = "direct"
    EVENT1 = "deferred_event1"  # Event 1 of a pair that is verified later in the stream
    EVENT2 = "verification"  # Event 2 of a pair
    UNVERIFIED = "unverified_event1"  # Event 1 never verified: a pending lead
    ORPHAN = "orphan_event2"  # Event 2 without any Event 1: held, later unlinked
    INVALID = "invalid"


# Share of events per kind; a pair contributes two events.
MIX: dict[str, float] = {"direct": 0.40, "pairs": 0.35, "unverified": 0.10, "orphans": 0.10, "invalid": 0.05}

# Kinds whose event makes the consumer publish a record at once (attributed or dead-letter):
# the latency phase matches these by key.
PUBLISHES_NOW = frozenset({Kind.DIRECT, Kind.EVENT2, Kind.INVALID})

_FIRST = ("Ana", "Ben", "Chloé", "Dmitri", "Emma", "Farid", "Grace", "Hiro", "Inès", "Jonas", "Kofi", "Lena")
_LAST = ("Martin", "Nakamura", "Okafor", "Petrov", "Quinn", "Rossi", "Schmidt", "Tanaka", "Usman", "Varga")
_DOMAINS = ("gmail.com", "outlook.com", "yahoo.fr", "proton.me", "example-corp.io", "web.de")
_DIRECT_EVENTS = ("signup_completed", "trial_started", "purchase_completed", "demo_booked")
_EVENT1_NAMES = ("signup_started", "account_created")
_EVENT2_NAMES = ("email_verified", "phone_verified")
_SOURCES = ("google", "meta", "tiktok", "linkedin", "bing", "newsletter")
_CAMPAIGNS = ("spring_sale_2025", "brand_search", "retargeting_q4", "lookalike_eu", "webinar_nov")
_PAGES = ("/pricing", "/signup", "/lp/free-trial", "/features/analytics", "/")


def _long(n: int) -> bytes:
    """Avro long: zigzag, then base-128 varint (check_encoding compares the result with fastavro)."""
    return uvarint(zigzag(n))


_SMALL = [_long(n) for n in range(4096)]


def _string(value: str) -> bytes:
    data = value.encode()
    size = len(data)
    return (_SMALL[size] if size < 4096 else _long(size)) + data


def _optional_string(value: str | None) -> bytes:
    return b"\x00" if value is None else b"\x02" + _string(value)


_OPTIONAL_FIELDS = ("clickId", "mode", "timestamp", "customerName", "customerEmail", "customerAvatar")


def encode_lead_event(record: dict[str, Any]) -> bytes:
    """Avro binary of schemas/lead_event.avsc, 5-10x faster than fastavro's schemaless_writer
    (which costs 15-30 us a record here); ``check_encoding`` compares the two."""
    parts = [_string(record["customerExternalId"]), _string(record["eventName"])]
    parts += [_optional_string(record.get(name)) for name in _OPTIONAL_FIELDS]
    metadata = record.get("metadata")
    if metadata is None:
        parts.append(b"\x00")
    else:
        parts.append(b"\x02")
        if metadata:
            parts.append(_long(len(metadata)))
            parts += [_string(k) + _string(v) for k, v in metadata.items()]
        parts.append(b"\x00")
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class Event:
    kind: Kind
    key: bytes
    value: bytes


@dataclass(slots=True)
class Workload:
    events: list[Event] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.events)

    def payload_bytes(self) -> int:
        return sum(len(e.key) + len(e.value) for e in self.events)


class _Maker:
    # Customer details and timestamps come from pools (sizes as in production, values repeating
    # every few thousand events): building them per event would triple the generation time.
    POOL = 8192

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        base_ms = int(time.time() * 1000) - 3_600_000
        self.timestamps = [
            datetime.fromtimestamp((base_ms + self.rng.randrange(3_600_000)) / 1000, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z")
            for _ in range(self.POOL)
        ]
        self.customers = [self._customer() for _ in range(self.POOL)]
        # The same values, Avro-encoded once: the tail of a record (name, email, avatar, metadata),
        # after 5 bytes: two empty strings and three nulls (clickId, mode, timestamp).
        self.encoded_timestamps = [_optional_string(t) for t in self.timestamps]
        self.encoded_customers = [
            encode_lead_event({"customerExternalId": "", "eventName": "", **c})[5:] for c in self.customers
        ]

    def uuid(self) -> str:
        h = f"{self.rng.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"

    def cid(self) -> str:
        return f"usr_{self.rng.getrandbits(64):016x}"

    def pick(self) -> int:
        return self.rng.getrandbits(13)  # 0..POOL-1

    def timestamp(self) -> str:
        return self.timestamps[self.pick()]

    def customer(self) -> dict[str, Any]:
        return self.customers[self.pick()]

    def _customer(self) -> dict[str, Any]:
        first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
        number = self.rng.randrange(1000)
        local = f"{first.lower()}.{last.lower()}{number}".replace("é", "e").replace("è", "e")
        return {
            "customerName": f"{first} {last}",
            "customerEmail": f"{local}@{self.rng.choice(_DOMAINS)}",
            "customerAvatar": f"https://cdn.example-app.com/avatars/{self.rng.getrandbits(128):032x}.jpg?s=256",
            "metadata": self.metadata(),
        }

    def metadata(self) -> dict[str, str]:
        meta = {
            "utm_source": self.rng.choice(_SOURCES),
            "utm_medium": "cpc",
            "utm_campaign": self.rng.choice(_CAMPAIGNS),
        }
        if self.rng.random() < 0.5:
            meta["landing_page"] = self.rng.choice(_PAGES)
        return meta

    def record(self, cid: str, event_name: str, **extra: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "customerExternalId": cid,
            "eventName": event_name,
            "clickId": None,
            "mode": None,
            "timestamp": self.timestamp(),
            "customerName": None,
            "customerEmail": None,
            "customerAvatar": None,
            "metadata": None,
        }
        base.update(extra)
        return base

    def encode(self, kind: Kind, record: dict[str, Any]) -> Event:
        return Event(kind, record["customerExternalId"].encode(), encode_lead_event(record))

    def fast(self, kind: Kind, cid: str, event_name: str, click_id: str | None, mode: str | None) -> Event:
        """Like ``encode(kind, record(...))`` from pre-encoded pool parts (customer details only
        when there is a clickId: verification events carry little, the details come from Event 1)."""
        tail = self.encoded_customers[self.pick()] if click_id else b"\x00\x00\x00\x00"
        value = b"".join(
            (
                _string(cid),
                _string(event_name),
                _optional_string(click_id),
                _optional_string(mode),
                self.encoded_timestamps[self.pick()],
                tail,
            )
        )
        return Event(kind, cid.encode(), value)

    def direct(self) -> Event:
        return self.fast(Kind.DIRECT, self.cid(), self.rng.choice(_DIRECT_EVENTS), self.uuid(), None)

    def event1(self, cid: str, kind: Kind) -> Event:
        return self.fast(kind, cid, self.rng.choice(_EVENT1_NAMES), self.uuid(), "deferred")

    def event2(self, cid: str, kind: Kind) -> Event:
        return self.fast(kind, cid, self.rng.choice(_EVENT2_NAMES), None, None)

    def invalid(self, index: int) -> Event:
        cid = self.cid()
        variant = index % 5
        if variant == 0:  # not Avro at all (a negative string length): dead-letter "undecodable"
            return Event(Kind.INVALID, cid.encode(), b"\x01" + self.rng.randbytes(40))
        if variant == 1:
            extra: dict[str, Any] = {
                "clickId": self.uuid(),
                **self.customer(),
                "customerEmail": "not-an-email",
            }
        elif variant == 2:
            extra = {"clickId": self.uuid(), "mode": "instant", **self.customer()}
        elif variant == 3:
            extra = {"mode": "deferred", **self.customer()}  # missing_click_id
        else:
            extra = {"clickId": "c" * 150, **self.customer()}  # invalid_field clickId
        return self.encode(Kind.INVALID, self.record(cid, self.rng.choice(_DIRECT_EVENTS), **extra))


def generate(total: int, seed: int = 6, max_gap: int | None = None) -> Workload:
    """About ``total`` events in the issue's mix, in stream order.

    Each pair's verification follows its Event 1 by a random 1..max_gap positions (default 5 % of
    the stream, at most 10,000), so joins span batches as they do in production.
    """
    maker = _Maker(seed)
    gap = max_gap or max(2, min(10_000, total // 20))
    n_pairs = round(total * MIX["pairs"] / 2)
    n_direct = round(total * MIX["direct"])
    n_unverified = round(total * MIX["unverified"])
    n_orphans = round(total * MIX["orphans"])
    n_invalid = max(0, total - n_direct - 2 * n_pairs - n_unverified - n_orphans)
    singles: list[Kind] = (
        [Kind.DIRECT] * n_direct
        + [Kind.UNVERIFIED] * n_unverified
        + [Kind.ORPHAN] * n_orphans
        + [Kind.INVALID] * n_invalid
        + [Kind.EVENT1] * n_pairs
    )
    maker.rng.shuffle(singles)
    span = len(singles)
    placed: list[tuple[float, Event]] = []
    for position, kind in enumerate(singles):
        if kind is Kind.DIRECT:
            placed.append((position, maker.direct()))
        elif kind is Kind.UNVERIFIED:
            placed.append((position, maker.event1(maker.cid(), Kind.UNVERIFIED)))
        elif kind is Kind.ORPHAN:
            placed.append((position, maker.event2(maker.cid(), Kind.ORPHAN)))
        elif kind is Kind.INVALID:
            placed.append((position, maker.invalid(position)))
        else:
            cid = maker.cid()
            placed.append((position, maker.event1(cid, Kind.EVENT1)))
            # Scale the gap to the single-event positions so the verification stays ~gap events later.
            later = position + maker.rng.uniform(0.5, gap * span / max(1, total))
            placed.append((later, maker.event2(cid, Kind.EVENT2)))
    placed.sort(key=lambda pair: pair[0])
    workload = Workload([event for _, event in placed])
    for event in workload.events:
        workload.counts[event.kind.value] = workload.counts.get(event.kind.value, 0) + 1
    return workload


def pending_leads(pending: int, total: int | None = None, seed: int = 7) -> Workload:
    """``pending`` deferred Event 1s that are never verified (each becomes one pending lead),
    padded to ``total`` events with records of the same size that leave nothing in Redis (a
    deferred-looking event with an unknown mode: dead-lettered ``invalid_mode``). Two runs of equal
    ``total`` then differ only in the number of pending leads, not in the input the consumer reads."""
    maker = _Maker(seed)
    padding = max(0, (total or pending) - pending)
    kinds = [Kind.UNVERIFIED] * pending + [Kind.INVALID] * padding
    maker.rng.shuffle(kinds)
    events = [
        maker.event1(maker.cid(), Kind.UNVERIFIED)
        if kind is Kind.UNVERIFIED
        else maker.fast(Kind.INVALID, maker.cid(), maker.rng.choice(_EVENT1_NAMES), maker.uuid(), "deferre_")
        for kind in kinds
    ]
    workload = Workload(events)
    workload.counts = {Kind.UNVERIFIED.value: pending, Kind.INVALID.value: padding}
    return workload


def check_encoding(workload: Workload, sample: int = 500) -> None:
    """The hand-written encoder must agree byte for byte with the consumer's own Avro codec."""
    from consumer.avro.codec import Codec  # noqa: PLC0415 - only for this check

    codec = Codec("lead_event")
    step = max(1, len(workload.events) // sample)
    for event in workload.events[::step]:
        if event.value[:1] == b"\x01":  # the deliberately undecodable records
            continue
        if codec.encode(codec.decode(event.value)) != event.value:
            raise AssertionError(f"bench encoder disagrees with fastavro on a {event.kind} event")
