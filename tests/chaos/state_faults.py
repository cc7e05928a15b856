"""Fault scenarios of the state in Redis (contract rule 9): failovers, a flush, a lost AOF tail, a
zombie. Each must end as every other run does: every lead exactly once, no wrong unlinked record.

The failover scenarios run on the Redis high-availability shape (services.sh REDIS_HA=1: a primary,
a replica and Sentinel), the consumers finding the primary through Sentinel.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis

from tests.chaos.driver import Run


def _primary_changes(run: Run, before: int, timeout_s: float = 60.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            now = run.services.primary_port()
        except Exception:  # no Sentinel answer yet
            now = before
        if now != before:
            return now
        run.sleep(0.5)
    run.violation(f"Sentinel promoted no replica within {timeout_s:.0f}s")
    return before


def _failover_past_a_frozen_replica(run: Run, barrier: bool) -> None:
    """The replica frozen (SIGSTOP) while Event 1s come in, so only the primary gets the writes;
    then the primary killed, the replica thawed and promoted by Sentinel; the old primary back as
    a replica. With the barrier nothing is committed while the replica is frozen (readiness says
    so), so the promoted replica holds every committed batch and no instance may find state lost.
    Without it the promoted replica is stale: the consumers notice, and restore the state from
    the changelog.

    The primary drops its link to the frozen replica at once. Otherwise the writes of the freeze
    wait in the loopback socket's buffers (up to tens of MB), the thawed replica reads them after
    the primary's death, and is not stale after all (half the runs before this cut)."""
    run.fleet.start("c1")
    run.fleet.start("c2")
    run.begin_feeding()
    run.at_progress(run.rng.uniform(0.25, 0.4))
    run.wait_working()
    before = run.services.primary_port()
    run.services.run("redis-freeze replica")
    client = redis.Redis.from_url(run.services.redis_url)
    try:
        cut = client.client_kill_filter(_type="replica")
    finally:
        client.close()
    frozen = run.rng.uniform(4.0, 6.0)
    run.fault(f"replica frozen {frozen:.1f}s while Event 1s come in ({cut} replication link cut)")
    deadline, seen = time.monotonic() + frozen, ""
    while time.monotonic() < deadline:
        status, body = run.readiness("c1")
        if status == 503 and "replicas" in body:
            seen = body.strip()
        run.sleep(0.25)
    if barrier and not seen:
        run.violation("/readyz of c1 never said the replicas were behind while the replica was frozen")
    run.services.run("redis-kill primary")
    run.services.run("redis-thaw replica")
    run.fault("primary killed (kill -9), replica thawed")
    after = _primary_changes(run, before)
    run.fault(f"Sentinel promoted the replica (primary {before} -> {after})")
    if not barrier:
        _expect_restore(run, required=True)
    run.services.run("redis-start")  # the old primary comes back as a replica
    run.wait_ready(["c1", "c2"], 120, "the failover")
    lost = sum(inc.process.logs().count(STATE_LOST) for inc in run.fleet.history)
    run.outcome.lines.append(f"instances that found the state lost: {lost}, restores: {run.restores}")
    if barrier and lost:
        run.violation("state lost after a failover with the replication barrier on")


def redis_failover(run: Run) -> None:
    """LEADS_REDIS_MIN_REPLICAS=1 (the default with Sentinel): see _failover_past_a_frozen_replica."""
    _failover_past_a_frozen_replica(run, barrier=True)


def redis_stale(run: Run) -> None:
    """LEADS_REDIS_MIN_REPLICAS=0: the promoted replica misses committed batches; detected, restored."""
    _failover_past_a_frozen_replica(run, barrier=False)


def redis_flush(run: Run) -> None:
    """FLUSHALL of Redis between Event 1s and their Event 2s, twice: every pending lead, dedupe
    mark, journal entry, progress and floor gone. Restored from the changelog."""
    run.fleet.start("c1")
    run.fleet.start("c2")
    run.begin_feeding()
    for moment in (run.rng.uniform(0.25, 0.4), run.rng.uniform(0.6, 0.75)):
        run.at_progress(moment)
        run.wait_working()
        client = redis.Redis.from_url(run.services.redis_url)
        try:
            keys = client.dbsize()
            client.flushall()
        finally:
            client.close()
        run.fault(f"FLUSHALL ({keys} keys)")
        _expect_restore(run)
    run.wait_ready(["c1", "c2"], 90, "the flushes")


def redis_aof_cut(run: Run) -> None:
    """Redis killed (kill -9) and the end of its append-only file cut off, as a crash with
    appendfsync everysec may leave it: the last writes, committed to Kafka already, are gone when
    Redis starts again (aof-load-truncated). Detected and restored."""
    run.fleet.start("c1")
    run.begin_feeding()
    run.at_progress(run.rng.uniform(0.35, 0.6))
    run.wait_working()
    run.services.run("redis-kill")
    cut = _cut_aof(run.services.directory / "data" / "redis", run.rng.uniform(0.15, 0.3))
    run.fault(f"redis kill -9, the last {cut} bytes of its AOF cut")
    run.services.run("redis-start")
    _expect_restore(run)
    run.wait_ready(["c1"], 90, "the restart")


def _cut_aof(folder: Path, share: float) -> int:
    """Truncate the newest incremental AOF file by ``share`` of its length (at least 64 KB)."""
    files = sorted(folder.glob("appendonlydir/*.incr.aof"), key=lambda f: f.stat().st_mtime)
    if not files:
        return 0
    newest = files[-1]
    size = newest.stat().st_size
    cut = min(size, max(65_536, int(size * share)))
    os.truncate(newest, size - cut)
    return cut


STATE_LOST = "state lost: redis holds less than was committed"  # consumer/health.py


def _expect_restore(run: Run, timeout_s: float = 90.0, required: bool = False) -> None:
    """Some instance notices the lost state and restores it (its log says so); ``required``: a
    committed batch was certainly lost, so no restore is a violation, not a note."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        logs = "".join(inc.process.logs() for inc in run.fleet.history)
        if logs.count("state restored from the changelog") > run.restores:
            run.restores += 1
            return
        run.sleep(1.0)
    if required:
        run.violation(f"no instance restored the lost state within {timeout_s:.0f}s")
        return
    run.note(
        f"no instance logged a restore within {timeout_s:.0f}s (the loss may have hit no committed batch)"
    )


def zombie(run: Run) -> None:
    """A consumer frozen past its session timeout while another takes its partitions over, then
    resumed with a batch in hand: its Redis writes are refused (fenced) and its transaction too.

    At 400 records/s a consumer waits in poll most of the time, and a freeze landing there ends
    in "partitions lost" before any write. So Redis is frozen first for half a second: every
    instance is then inside a Redis call with its batch, and the zombie is frozen there. Redis
    answers the queued call once thawed; a zombie frozen waiting on a read (not on its write's
    reply) sends its write after the takeover, and that write is refused."""
    run.fleet.start("c1")
    run.fleet.start("c2")
    run.begin_feeding()
    for moment in (run.rng.uniform(0.25, 0.4), run.rng.uniform(0.6, 0.75)):
        run.at_progress(moment)
        run.wait_working()
        frozen = run.rng.uniform(10.0, 14.0)  # the session timeout is 6 s
        slot = run.rng.choice(["c1", "c2"])
        run.services.run("redis-freeze")
        run.sleep(0.5)
        run.fleet.pause(slot, frozen, meanwhile=lambda: run.services.run("redis-thaw"))
        run.fault(f"{slot} frozen {frozen:.0f}s (past its session) inside a Redis call, then resumed")
        run.sleep(run.rng.uniform(2.0, 4.0))
    run.wait_ready(["c1", "c2"], 90, "the freezes")
    fenced = sum(
        inc.process.logs().count("its partitions were assigned to another instance")
        for inc in run.fleet.history
    )
    run.outcome.lines.append(f"writes refused as a zombie's: {fenced}")
