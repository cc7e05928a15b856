"""What a fault run must end with: every lead exactly once in the committed outputs, every bad
record dead-lettered once, offsets at the end, clean stops, a consistent Redis, honest logs."""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING, Any

import redis

from harness.kafka import read_all
from tests.chaos.fleet import STOP_LIMIT_S
from tests.chaos.stream import COMPARED
from tests.support.stores import audit, wake_entries

if TYPE_CHECKING:
    from tests.chaos.driver import Run

TRANSACTION_ABORT_S = 75.0  # transaction.timeout.ms (60 s) + the broker's abort scan (10 s) + margin

# The consumer's state-change log lines: each must alternate with its opposite (one line per change).
STATE_LINES = {
    "redis": ("redis unavailable, pausing and retrying", "redis reachable again"),
    "kafka": ("kafka broker unreachable", "kafka broker reachable again"),
}


def verify(run: Run) -> None:
    """Every check of one run, once its consumers are stopped: the committed outputs against the
    stream's expectations, the offsets, the stops, what Redis holds and the logs."""
    out = run.outcome
    stream, exactly_once = run.stream, run.guarantee == "exactly_once"
    out.lines.append(
        f"stream: {len(stream.records)} records sent in {run.feeder.duration:.0f}s "
        f"({', '.join(f'{k} {v}' for k, v in sorted(stream.stories.items()))}; "
        f"bad {sum(stream.bad.values())}, exact duplicates {stream.duplicates}); "
        f"guarantee {run.guarantee}; drained at {run.drained_at:.0f}s"
    )
    for problem in run.fleet.unexpected_exits:
        run.violation(f"consumer exited by itself: {problem}")
    for slot, rc, seconds in run.fleet.stops:
        if rc != 0 or seconds > STOP_LIMIT_S:
            run.violation(
                f"SIGTERM of {slot}: exit code {rc} after {seconds:.1f}s (want 0 within {STOP_LIMIT_S:.0f}s)"
            )
    stops = run.fleet.stops
    if stops:
        out.lines.append(
            f"SIGTERM stops: {len(stops)}, exit 0: {sum(1 for _, rc, _ in stops if rc == 0)}, "
            f"slowest {max(s for _, _, s in stops):.1f}s"
        )
    if run.fleet.liveness_restarts:
        out.lines.append(
            f"liveness restarts (run loop stalled, killed and started again): "
            f"{', '.join(run.fleet.liveness_restarts)}"
        )
    if run.committed != run.end:
        run.violation(f"committed offsets {run.committed} != end offsets {run.end}")
    else:
        out.lines.append(f"committed offsets == end offsets ({sum(run.end.values())} records)")
    if any(p is None for p in run.feeder.placed):
        run.violation("harness: some records have no delivery report")
        return
    placed = [p for p in run.feeder.placed if p is not None]
    inputs = {p: stream.records[i] for i, p in enumerate(placed)}

    # A consumer killed with a transaction open holds the last stable offset of the output
    # partitions it wrote to until the broker aborts that transaction (transaction.timeout.ms,
    # 60 s, plus the broker's 10 s clean-up interval): read_committed readers see the records
    # after it only then. Read as such a reader would, once that can have happened.
    settled = run.fleet.last_kill + TRANSACTION_ABORT_S - time.monotonic()
    if run.fleet.last_kill and settled > 0:
        out.lines.append(f"waited {settled:.0f}s for the last killed instance's transaction to be aborted")
        time.sleep(settled)
    attributed = read_all(run.topics.attributed, "attributed_lead", bootstrap=run.services.bootstrap)
    dead = read_all(run.topics.dead_letter, "dead_letter", bootstrap=run.services.bootstrap)
    unlinked = read_all(run.topics.unlinked, "unlinked_lead", bootstrap=run.services.bootstrap)
    for topic, (_, blocked) in (
        ("attributed", attributed),
        ("dead-letter", dead),
        ("unlinked", unlinked),
    ):
        for problem in blocked:
            run.violation(f"{topic}: {problem}")

    # Attributed: every expected lead exactly once (by leadId), nothing else.
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in attributed[0]:
        by_id[record["leadId"]].append(record)
    expected = stream.attributed
    missing = [lid for lid in expected if lid not in by_id]
    unexpected = [lid for lid in by_id if lid not in expected]
    duplicates = sum(len(v) - 1 for v in by_id.values())
    mismatched = []
    unequal_copies = 0
    for lid, records in by_id.items():
        want = expected.get(lid)
        first = records[0]
        if want is not None and (
            {k: first[k] for k in COMPARED} != want or first["_key"] != want["customerExternalId"].encode()
        ):
            mismatched.append(lid)
        unequal_copies += sum(
            1 for r in records[1:] if _without(r, "_partition") != _without(first, "_partition")
        )
    out.lines.append(
        f"attributed: expected {len(expected)}, found {len(by_id)}, duplicates {duplicates}, "
        f"missing {len(missing)}, unexpected {len(unexpected)}, wrong content {len(mismatched)}"
    )
    if missing:
        run.violation(f"{len(missing)} attributed leads missing, e.g. {_describe(expected[missing[0]])}")
    if unexpected:
        run.violation(f"{len(unexpected)} unexpected attributed leads, e.g. {by_id[unexpected[0]][0]}")
    if mismatched:
        lid = mismatched[0]
        run.violation(
            f"{len(mismatched)} attributed leads with wrong content, e.g. got "
            f"{ {k: by_id[lid][0][k] for k in COMPARED} } want {expected[lid]}"
        )
    if duplicates and exactly_once:
        run.violation(f"{duplicates} duplicate attributed records under exactly_once")
    if unequal_copies:
        run.violation(f"{unequal_copies} repeated attributed records differ from the first copy")

    # Dead letters: every bad record exactly once, by (sourcePartition, sourceOffset).
    want_dead = stream.expected_dead_letters(placed)
    by_source: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for record in dead[0]:
        by_source[(record["sourcePartition"], record["sourceOffset"])].append(record)
    dead_missing = [s for s in want_dead if s not in by_source]
    dead_unexpected = [s for s in by_source if s not in want_dead]
    dead_duplicates = sum(len(v) - 1 for v in by_source.values())
    wrong = []
    for source, records in by_source.items():
        if source not in want_dead:
            continue
        original = inputs[source]
        for record in records:
            if (
                record["reason"] != want_dead[source]
                or record["value"] != original.value
                or record["key"] != original.key
                or record["_key"] != original.key
                or record["sourceTopic"] != run.topics.input
            ):
                wrong.append(source)
                break
        unequal_copies = sum(
            1
            for r in records[1:]
            if _without(r, "failedAt", "_partition") != _without(records[0], "failedAt", "_partition")
        )
        if unequal_copies:
            wrong.append(source)
    reasons = Counter(want_dead.values())
    out.lines.append(
        f"dead letters: expected {len(want_dead)} ({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}), "
        f"found {len(by_source)}, duplicates {dead_duplicates}, missing {len(dead_missing)}, "
        f"unexpected {len(dead_unexpected)}, wrong {len(wrong)}"
    )
    if dead_missing:
        run.violation(
            f"{len(dead_missing)} dead letters missing, e.g. input {dead_missing[0]} ({want_dead[dead_missing[0]]})"
        )
    if dead_unexpected:
        src = dead_unexpected[0]
        run.violation(
            f"{len(dead_unexpected)} unexpected dead letters, e.g. {by_source[src][0]['reason']} for input {src}"
        )
    if wrong:
        run.violation(
            f"{len(wrong)} dead letters with wrong reason, bytes or key, e.g. input {wrong[0]}: {by_source[wrong[0]][0]}"
        )
    if dead_duplicates and exactly_once:
        run.violation(f"{dead_duplicates} duplicate dead letters under exactly_once")
    if stream.windowed is None:
        out.lines.append(f"unlinked: found {len(unlinked[0])}, expected 0 (nothing expires during a run)")
        if unlinked[0]:
            run.violation(f"{len(unlinked[0])} unlinked records, e.g. {unlinked[0][0]['reason']}")
    else:
        check_unlinked(run, unlinked[0], attributed[0])
    written = sum(
        len(read_all(topic, None, 60, committed=False, bootstrap=run.services.bootstrap)[0])
        for topic in (run.topics.attributed, run.topics.dead_letter)
    )
    out.lines.append(
        f"records written but never committed (aborted or zombie transactions, or undelivered "
        f"retries): {written - len(attributed[0]) - len(dead[0])}"
    )
    check_state(run)
    check_logs(run)


def check_unlinked(run: Run, unlinked: list[dict[str, Any]], attributed: list[dict[str, Any]]) -> None:
    """The windowed stream: every expected unlinked record published at least once, with its one
    leadId (repeats identical but for detectedAt), nothing else, and no lead both attributed and
    unlinked."""
    expected, problems = run.stream.windowed.expected_unlinked(run.feeder.stamps)
    for problem in problems[:3]:
        run.violation(f"harness: {problem} (of {len(problems)})")
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in unlinked:
        by_id[record["leadId"]].append(record)
    missing = [lid for lid in expected if lid not in by_id]
    unexpected = [lid for lid in by_id if lid not in expected]
    unequal = sum(
        1
        for records in by_id.values()
        for r in records[1:]
        if _without(r, "detectedAt", "_partition") != _without(records[0], "detectedAt", "_partition")
    )
    leads = {(r["customerExternalId"], r["clickId"], r["eventName"]) for r in attributed}
    both = [r for r in unlinked if (r["customerExternalId"], r["clickId"], r["eventName"]) in leads]
    reasons = Counter(reason for _cid, reason in expected.values())
    run.outcome.lines.append(
        f"unlinked: expected {len(expected)} ({', '.join(f'{k} {v}' for k, v in sorted(reasons.items()))}), "
        f"found {len(by_id)}, repeats {len(unlinked) - len(by_id)}, missing {len(missing)}, "
        f"unexpected {len(unexpected)}, also attributed {len(both)}"
    )
    if missing:
        run.violation(f"{len(missing)} unlinked records missing, e.g. {expected[missing[0]]}")
    if unexpected:
        record = by_id[unexpected[0]][0]
        run.violation(
            f"{len(unexpected)} unexpected unlinked records, e.g. {record['reason']} of {record['customerExternalId']}"
        )
    if unequal:
        run.violation(f"{unequal} repeated unlinked records differ from the first copy")
    if both:
        run.violation(f"{len(both)} leads both attributed and unlinked, e.g. {both[0]['customerExternalId']}")


def check_state(run: Run) -> None:
    """What the faults left in Redis: every customer state has its wake entry (states have no
    TTL: one without an entry would never be swept), and the pending/held counters equal the
    items in the states."""
    prefix = run.env["LEADS_REDIS_PREFIX"]
    client = redis.Redis.from_url(run.services.redis_url)
    try:
        entries = {(s, cid) for s, cids in wake_entries(client, prefix).items() for cid in cids}
        keys = [k.decode() for k in client.scan_iter(match=f"{prefix}:s:*", count=1000)]
        blobs: list[bytes | None] = client.mget(keys) if keys else []  # type: ignore[assignment]
        cids = [key[len(prefix) + 4 : -1] for key in keys]  # "<prefix>:s:{<cid>}"
        found = audit(zip(cids, blobs, strict=True), entries)
        counters = [int(v or 0) for v in client.mget(f"{prefix}:pending", f"{prefix}:held")]
    finally:
        client.close()
    unindexed = len(found.unindexed)
    run.outcome.lines.append(
        f"redis: {found.states} states, {len(entries)} wake entries, {found.pending} pending / "
        f"{found.held} held (counters {counters[0]} / {counters[1]}), states without their wake "
        f"entry {unindexed}"
    )
    if unindexed:
        run.violation(f"{unindexed} states without a wake entry: never swept")
    if counters != [found.pending, found.held]:
        run.violation(f"counters {counters} != items in the states {[found.pending, found.held]}")


def check_logs(run: Run) -> None:
    """One log line per state change: 'unavailable' and 'reachable again' must alternate."""
    changes = 0
    for incarnation in run.fleet.history:
        state = dict.fromkeys(STATE_LINES, True)
        for line in incarnation.process.logs().splitlines():
            try:
                message = json.loads(line).get("msg", "")
            except ValueError:
                continue
            for what, (down, up) in STATE_LINES.items():
                if message in (down, up):
                    changes += 1
                    now_ok = message == up
                    if now_ok == state[what]:
                        run.violation(
                            f"{incarnation.process.log_path.name}: '{message}' logged twice in a row"
                        )
                    state[what] = now_ok
    run.outcome.lines.append(f"state-change log lines: {changes} (alternating)")


def _without(record: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in names}


def _describe(expected: dict[str, Any]) -> str:
    return f"{expected['mode']} lead {expected['leadId']} of {expected['customerExternalId']}"
