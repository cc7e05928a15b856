"""A realistic, seeded input stream and the outputs it must produce.

Stories, one customer (cid) each, interleaved over the stream with their order kept:

  direct      one direct lead                                     -> 1 attributed (direct)
  two_direct  two direct leads, different clicks and event names  -> 2 attributed (direct)
  reclick     the same event name twice with different clicks     -> 1 attributed (the first click)
  deferred    Event 1 (deferred) ... Event 2 later in the stream  -> 1 attributed (deferred)
  early       Event 2 ... then Event 1 (rule 4, within the grace) -> 1 attributed (deferred)
  locked      Event 1 ... a direct lead with another click ... Event 2
                                                                  -> 1 attributed (deferred)
                                                                     + 1 dead letter (duplicate_attribution)

Exact duplicates (the very same bytes and key, later in the stream) are added for ~8% of the
story events; none of them may publish anything. About 5% of all records are bad: garbage bytes
(random or JSON), an invalid mode, a deferred event without clickId, an invalid email; each must
be dead-lettered exactly once, with its reason, identified by its (partition, offset).

The expectations are written out per story here, deliberately without calling the consumer's
rules, so that the suite checks the consumer rather than itself. Only leadId is computed with
consumer.model.lead_id (its determinism is the contract; its formula is not).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from consumer.avro.codec import Codec
from consumer.model import Invalid, LeadEvent, SourceRecord, lead_id
from consumer.processing.records import parse

# Fields compared between an expected and a published attributed lead (attributedAt is processing time).
COMPARED = (
    "leadId",
    "customerExternalId",
    "clickId",
    "eventName",
    "mode",
    "verificationEventName",
    "customerName",
    "customerEmail",
    "customerAvatar",
    "metadata",
    "eventTimestamp",
    "verifiedTimestamp",
)

STORY_WEIGHTS = {
    "direct": 34,
    "two_direct": 8,
    "reclick": 6,
    "deferred": 36,
    "early": 8,
    "locked": 8,
}
DUPLICATE_SHARE = 0.08
# Story slots that are a bad record instead: a story has ~2 records, a bad slot ~1, so this makes
# about 5% of all records bad (not counting the duplicate_attribution dead letters of "locked").
BAD_SLOT_SHARE = 0.09
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BAD_KINDS = {
    "garbage": ("undecodable", 40),
    "json": ("undecodable", 10),
    "invalid_mode": ("invalid_mode", 25),
    "no_click": ("missing_click_id", 20),
    "bad_email": ("invalid_field", 5),
}


@dataclass
class Record:
    key: bytes | None
    value: bytes
    kind: str  # story kind, "dup", or a bad kind
    dead_letter: str | None = None  # expected dead-letter reason, None when none is expected
    due_s: float | None = None  # when the feeder sends it (the windowed stream); None: a bursty rate


@dataclass
class Stream:
    seed: int
    records: list[Record]
    attributed: dict[str, dict[str, Any]]  # leadId -> expected compared fields
    stories: dict[str, int] = field(default_factory=dict)
    bad: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    windowed: Any = None  # tests/chaos/windows.Windowed for the windowed stream, else None

    def expected_dead_letters(self, placed: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """(partition, offset) -> reason, once each record's place in the topic is known."""
        return {placed[i]: r.dead_letter for i, r in enumerate(self.records) if r.dead_letter is not None}


class _Builder:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.codec = Codec("lead_event")
        self.placed: list[tuple[float, float, Record]] = []  # (position in [0, 1), tie-break, record)
        self.attributed: dict[str, dict[str, Any]] = {}
        self.count = 0

    # -- helpers ----------------------------------------------------------------------------

    def _ts(self) -> str | None:
        roll = self.rng.random()
        if roll < 0.2:
            return None
        base = datetime(2026, 11, 26, 10, 0, tzinfo=UTC) - timedelta(
            seconds=self.rng.randrange(0, 30 * 86400)
        )
        if roll < 0.4:  # with an offset instead of Z
            return base.astimezone().replace(microsecond=0).isoformat()
        return base.strftime("%Y-%m-%dT%H:%M:%S.") + f"{self.rng.randrange(1000):03d}Z"

    def _customer(self, n: int) -> dict[str, Any]:
        rng = self.rng
        return {
            "customerName": f"Customer {n}" if rng.random() < 0.8 else None,
            "customerEmail": f"user.{n}@example.com" if rng.random() < 0.8 else None,
            "customerAvatar": f"https://cdn.example.com/avatars/{n}.png" if rng.random() < 0.5 else None,
            "metadata": (
                {"campaign": f"spring-{n % 37}", "utm_source": rng.choice(["google", "meta", "tiktok"])}
                if rng.random() < 0.6
                else None
            ),
        }

    def _event(self, cid: str, name: str, **fields: Any) -> dict[str, Any]:
        record: dict[str, Any] = {
            "customerExternalId": cid,
            "eventName": name,
            "clickId": None,
            "mode": None,
            "timestamp": self._ts(),
            "customerName": None,
            "customerEmail": None,
            "customerAvatar": None,
            "metadata": None,
        }
        record.update(fields)
        return record

    def _encode_good(self, record: dict[str, Any]) -> bytes:
        value = self.codec.encode(record)
        # A generator bug would show up as a consumer bug: make sure the record is valid.
        parsed = parse(self.codec, SourceRecord("x", 0, 0, None, value))
        assert isinstance(parsed, LeadEvent), (parsed, record)
        return value

    def _place(self, position: float, record: Record) -> None:
        self.placed.append((position, self.rng.random(), record))

    def _emit(
        self,
        positions: list[float],
        events: list[dict[str, Any]],
        kind: str,
        dead: dict[int, str] | None = None,
    ) -> None:
        """Place a story's events (positions ascending) and exact duplicates of some of them."""
        dead = dead or {}
        cid = events[0]["customerExternalId"]
        key = cid.encode()
        for index, (position, event) in enumerate(zip(positions, events, strict=True)):
            value = self._encode_good(event)
            self._place(position, Record(key, value, kind, dead.get(index)))
            if index not in dead and self.rng.random() < DUPLICATE_SHARE:
                # Later in the stream; for the story kinds here any later moment is a duplicate.
                self._place(position + self.rng.uniform(0.0, 0.2), Record(key, value, "dup"))
                self.count += 1

    def _expect(self, event1: dict[str, Any], event2: dict[str, Any] | None) -> None:
        cid, click, name = event1["customerExternalId"], event1["clickId"], event1["eventName"]
        lid = lead_id(cid, click, name)
        self.attributed[lid] = {
            "leadId": lid,
            "customerExternalId": cid,
            "clickId": click,
            "eventName": name,
            "mode": "direct" if event2 is None else "deferred",
            "verificationEventName": None if event2 is None else event2["eventName"],
            "customerName": event1["customerName"],
            "customerEmail": event1["customerEmail"],
            "customerAvatar": event1["customerAvatar"],
            "metadata": event1["metadata"],
            "eventTimestamp": _ms(event1["timestamp"]),
            "verifiedTimestamp": None if event2 is None else _ms(event2["timestamp"]),
        }

    def _later(self, start: float, count: int) -> list[float]:
        """``count`` ascending positions from ``start``: Event 2 comes "later in the stream"."""
        positions = [start]
        for _ in range(count - 1):
            positions.append(positions[-1] + self.rng.uniform(0.0005, 0.15))
        return positions

    # -- stories ------------------------------------------------------------------------------

    def story(self, kind: str, n: int, start: float) -> None:
        rng = self.rng
        cid = f"cust-{n:07d}"
        who = self._customer(n)
        if kind == "direct":
            event = self._event(
                cid, rng.choice(["signup", "purchase", "demo_request"]), clickId=f"clk-{n}-a", **who
            )
            self._emit([start], [event], kind)
            self._expect(event, None)
        elif kind == "two_direct":
            first = self._event(cid, "signup", clickId=f"clk-{n}-a", **who)
            second = self._event(cid, "purchase", clickId=f"clk-{n}-b", **who)
            self._emit(self._later(start, 2), [first, second], kind)
            self._expect(first, None)
            self._expect(second, None)
        elif kind == "reclick":
            first = self._event(cid, "signup", clickId=f"clk-{n}-a", **who)
            again = self._event(cid, "signup", clickId=f"clk-{n}-b", **who)  # done(cid, signup): duplicate
            self._emit(self._later(start, 2), [first, again], kind)
            self._expect(first, None)
        elif kind in {"deferred", "early", "locked"}:
            name = rng.choice(["signup_started", "trial_started"])
            event1 = self._event(cid, name, clickId=f"clk-{n}-a", mode="deferred", **who)
            event2 = self._event(
                cid,
                rng.choice(["email_verified", "phone_verified"]),
                **(self._customer(n + 1) if rng.random() < 0.3 else {}),
            )
            if kind == "deferred":
                self._emit(self._later(start, 2), [event1, event2], kind)
            elif kind == "early":
                self._emit(self._later(start, 2), [event2, event1], kind)
            else:
                intruder = self._event(cid, "purchase", clickId=f"clk-{n}-x", **who)
                self._emit(
                    self._later(start, 3), [event1, intruder, event2], kind, {1: "duplicate_attribution"}
                )
            self._expect(event1, event2)
        else:
            raise ValueError(kind)

    def bad(self, kind: str, n: int, position: float) -> None:
        rng = self.rng
        cid = f"cust-{n:07d}"
        reason = BAD_KINDS[kind][0]
        key: bytes | None = cid.encode()
        if kind == "garbage":
            value = self._undecodable(lambda: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))))
            key = None if rng.random() < 0.5 else key
        elif kind == "json":  # a producer sending JSON instead of Avro
            value = self._undecodable(
                lambda: json.dumps(
                    {"customerExternalId": cid, "eventName": "signup", "clickId": f"c{n}"}
                ).encode()
            )
        elif kind == "invalid_mode":
            mode = rng.choice(["later", "DEFERRED", "direct", "deferred "])
            value = self.codec.encode(self._event(cid, "signup", clickId=f"clk-{n}-m", mode=mode))
        elif kind == "no_click":
            value = self.codec.encode(
                self._event(cid, "signup_started", mode="deferred", clickId=rng.choice([None, ""]))
            )
        elif kind == "bad_email":
            value = self.codec.encode(
                self._event(cid, "signup", clickId=f"clk-{n}-e", customerEmail="not-an-address")
            )
        else:
            raise ValueError(kind)
        parsed = parse(self.codec, SourceRecord("x", 0, 0, key, value))
        assert isinstance(parsed, Invalid) and parsed.reason.value == reason, (kind, parsed)
        self._place(position, Record(key, value, kind, reason))
        if rng.random() < DUPLICATE_SHARE:  # a bad record sent twice is two dead letters
            self._place(position + rng.uniform(0.0, 0.2), Record(key, value, kind, reason))
            self.count += 1

    def _undecodable(self, make: Any) -> bytes:
        while True:
            value: bytes = make()
            parsed = parse(self.codec, SourceRecord("x", 0, 0, None, value))
            if isinstance(parsed, Invalid) and parsed.reason.value == "undecodable":
                return value


def epoch_ms(moment: datetime) -> int:
    """Exact (integer) epoch milliseconds; float arithmetic could be off by one."""
    return (moment - EPOCH) // timedelta(milliseconds=1)


def _ms(timestamp: str | None) -> int | None:
    return None if timestamp is None else epoch_ms(datetime.fromisoformat(timestamp))


def generate(events: int, seed: int) -> Stream:
    """At least ``events`` records (a story is never cut), deterministic for a seed."""
    builder = _Builder(seed)
    rng = builder.rng
    kinds, weights = zip(*STORY_WEIGHTS.items(), strict=True)
    bad_kinds, bad_weights = zip(*((k, w) for k, (_, w) in BAD_KINDS.items()), strict=True)
    stories: dict[str, int] = {}
    bad: dict[str, int] = {}
    n = 0
    while len(builder.placed) < events:
        n += 1
        if rng.random() < BAD_SLOT_SHARE:
            kind = rng.choices(bad_kinds, bad_weights)[0]
            bad[kind] = bad.get(kind, 0) + 1
            builder.bad(kind, n, rng.random())
            continue
        kind = rng.choices(kinds, weights)[0]
        stories[kind] = stories.get(kind, 0) + 1
        builder.story(kind, n, rng.random() * 0.9)
    builder.placed.sort(key=lambda item: (item[0], item[1]))
    records = [record for _, _, record in builder.placed]
    return Stream(seed, records, builder.attributed, stories, bad, builder.count)
