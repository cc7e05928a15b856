"""The windowed stream: stories whose outcome depends on the windows (contract rules 4, 5 and 8).

Short windows (a pending TTL of 8 s, a grace of 4 s), a steady feed, and each story's records at
moments chosen against the windows, far from their edges:

  in_time      Event 1 ... Event 2 0.3 TTL later                      -> 1 attributed (deferred)
  in_time_far  the same, Event 2 keyed apart (another partition, maybe another instance)
  early        Event 2 ... Event 1 0.3 grace later                    -> 1 attributed (deferred)
  early_far    the same, Event 1 keyed apart
  unverified   Event 1 alone                                          -> verification_expired
  orphan       Event 2 alone                                          -> no_matching_event1
  too_late     Event 1 ... Event 2 1.6 TTL later                      -> verification_expired
                                                                         + no_matching_event1
  direct       a direct lead                                          -> 1 attributed (direct)

Whatever the faults do to the consumers (stopped longer than the TTL, clocks skewed, partitions
lagging each other, instances killed while expiries fall due), the outcome is fixed by when each
record reached Kafka. The input topic uses LogAppendTime, so that is the broker's timestamp, which
the feeder reads back from each delivery report: an unlinked record's leadId names its deadline, so
the expected ids are computed from those timestamps once the records are in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consumer.model import lead_id
from tests.chaos.stream import Record, Stream, _Builder

TTL_S = 8.0
GRACE_S = 4.0
# The rate the schedule is made for; the feeder keeps to the moments it is given.
RATE = 150.0
STORY_WEIGHTS = {
    "in_time": 20,
    "in_time_far": 12,
    "early": 10,
    "early_far": 8,
    "unverified": 12,
    "orphan": 10,
    "too_late": 6,
    "direct": 22,
}
# Gaps (in windows) a story's second record keeps from its first, and the actual gap, measured on
# the broker's timestamps, that still decides the story the same way.
GAPS = {
    "in_time": (0.3, TTL_S, 0.0, 0.75),
    "in_time_far": (0.3, TTL_S, 0.0, 0.75),
    "early": (0.3, GRACE_S, 0.0, 0.75),
    "early_far": (0.3, GRACE_S, 0.0, 0.75),
    "too_late": (1.6, TTL_S, 1.2, 99.0),
}


@dataclass
class Story:
    kind: str
    records: list[int]  # indexes into the stream's records, in story order
    events: list[dict[str, Any]]


class _WindowedBuilder(_Builder):
    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.timed: list[tuple[float, Record]] = []
        self.stories: list[tuple[str, list[Record], list[dict[str, Any]]]] = []

    def add(self, kind: str, n: int, start_s: float) -> None:
        cid = f"win-{n:07d}"
        who = self._customer(n)
        name = self.rng.choice(["signup_started", "trial_started"])
        event1 = self._event(cid, name, clickId=f"clk-{n}", mode="deferred", **who)
        event2 = self._event(cid, self.rng.choice(["email_verified", "phone_verified"]))
        if kind == "direct":
            events = [self._event(cid, "demo_request", clickId=f"clk-{n}", **who)]
        elif kind in {"unverified"}:
            events = [event1]
        elif kind == "orphan":
            events = [event2]
        elif kind in {"in_time", "in_time_far", "too_late"}:
            events = [event1, event2]
        else:
            events = [event2, event1]
        keys = [cid.encode()] * len(events)
        if kind.endswith("_far"):
            keys[1] = f"{cid}#second".encode()  # keyed apart: most likely another partition
        records = [
            Record(key, self._encode_good(event), kind) for key, event in zip(keys, events, strict=True)
        ]
        if kind == "direct":
            self._expect(events[0], None)
        elif kind.startswith(("in_time", "early")):
            self._expect(event1, event2)
        self.timed.append((start_s, records[0]))
        if len(records) == 2:
            gap, window, _low, _high = GAPS[kind]
            self.timed.append((start_s + gap * window, records[1]))
        self.stories.append((kind, records, events))


@dataclass
class Windowed:
    """What the checks need: the stories, and the windows the consumers ran with."""

    stories: list[Story]
    ttl_ms: int
    grace_ms: int

    def expected_unlinked(self, stamps: list[int | None]) -> tuple[dict[str, tuple[str, str]], list[str]]:
        """(unlinked leadId -> (cid, reason), problems), from the broker's timestamp of each record
        (``stamps``, by record index). A problem is a story whose records did not keep their
        distance (the attributed leads are fixed by the stories: Stream.attributed)."""
        unlinked: dict[str, tuple[str, str]] = {}
        problems: list[str] = []
        for story in self.stories:
            times = [stamps[i] for i in story.records]
            if any(t is None for t in times):
                problems.append(f"{story.kind} story without a delivery timestamp")
                continue
            at = [t for t in times if t is not None]
            if story.kind in GAPS:
                _gap, window, low, high = GAPS[story.kind]
                measured = (at[1] - at[0]) / 1000 / window
                if not low <= measured <= high:
                    problems.append(
                        f"{story.kind} story: records {measured:.2f} windows apart, want {low}..{high}"
                    )
                    continue
            first = story.events[0]
            cid = first["customerExternalId"]
            if story.kind in {"unverified", "too_late"}:
                deadline = at[0] + self.ttl_ms
                lid = lead_id(cid, first["clickId"], first["eventName"], f"verification_expired:{deadline}")
                unlinked[lid] = (cid, "verification_expired")
            if story.kind in {"orphan", "too_late"}:
                event2, arrived = (first, at[0]) if story.kind == "orphan" else (story.events[1], at[1])
                deadline = arrived + self.grace_ms
                lid = lead_id(cid, None, event2["eventName"], f"no_matching_event1:{deadline}")
                unlinked[lid] = (cid, "no_matching_event1")
        return unlinked, problems


def generate_windowed(events: int, seed: int) -> Stream:
    """About ``events`` records on a steady schedule of RATE per second, deterministic for a seed."""
    builder = _WindowedBuilder(seed)
    rng = builder.rng
    kinds, weights = zip(*STORY_WEIGHTS.items(), strict=True)
    duration_s = events / RATE
    stories: dict[str, int] = {}
    n = 0
    while len(builder.timed) < events:
        n += 1
        kind = rng.choices(kinds, weights)[0]
        stories[kind] = stories.get(kind, 0) + 1
        builder.add(kind, n, rng.uniform(0.0, max(1.0, duration_s - 2 * TTL_S)))
    builder.timed.sort(key=lambda item: item[0])
    records = []
    for due_s, record in builder.timed:
        record.due_s = due_s
        records.append(record)
    index = {id(record): i for i, record in enumerate(records)}
    windowed = Windowed(
        [Story(kind, [index[id(r)] for r in rs], evs) for kind, rs, evs in builder.stories],
        int(TTL_S * 1000),
        int(GRACE_S * 1000),
    )
    stream = Stream(seed, records, builder.attributed, stories)
    stream.windowed = windowed
    return stream
