"""The fault scenarios. Each gets a fresh ``Run`` (own topics, group, Redis prefix) and injects
its faults while the feeder produces the stream; moments are drawn from the run's seeded RNG and
tied to the feeder's progress, so they land while the consumers are busy."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.chaos.cluster_faults import cluster, fresh_kills
from tests.chaos.driver import Run
from tests.chaos.state_faults import redis_aof_cut, redis_failover, redis_flush, redis_stale, zombie
from tests.chaos.time_faults import clocks, expiry_kills, lagging, outage

KILLS = 5
# Share of kills preceded by a short SIGSTOP of the consumer: the backlog it builds keeps the
# consumer in full batches, so the kill likely lands between a batch's Redis write and its commit
# (the case the journal exists for); a kill at an arbitrary moment mostly finds it idle.
STALL_SHARE = 0.7


def baseline(run: Run) -> None:
    """No fault: checks the harness itself (and gives the throughput for comparison)."""
    run.fleet.start("c1")
    run.begin_feeding()


def kill(run: Run, kills: int = KILLS) -> None:
    """kill -9 of the consumer at random moments (some right after a stall), restarted after
    0.2-2 s with the same transactional.id (a crash-looping pod of a StatefulSet)."""
    run.fleet.start("c1")
    run.begin_feeding()
    hits = 0
    replayed: set[tuple[int, int]] = set()
    for moment in sorted(run.rng.uniform(0.05, 0.97) for _ in range(kills)):
        run.at_progress(moment)
        run.wait_working()
        stalled = ""
        if run.rng.random() < STALL_SHARE:
            stall = run.rng.uniform(2.0, 5.0)
            run.fleet.pause("c1", stall)
            stalled = f"after a {stall:.1f}s SIGSTOP, "
            run.sleep(run.rng.uniform(0.0, 0.25))
        else:
            run.sleep(run.rng.uniform(0.0, 1.5))
        run.fleet.kill("c1")
        pending = run.in_flight()
        new = pending - replayed  # left by this incarnation, not by an earlier kill
        replayed = pending
        hits += bool(new)
        run.fault(f"kill -9 {stalled}{len(new)} journaled decisions uncommitted")
        run.sleep(run.rng.uniform(0.2, 2.0))
        run.fleet.start("c1", wait=False)
    run.outcome.lines.append(
        f"kills that hit a batch between its Redis write and its commit: {hits} of {kills}"
    )
    run.wait_ready(["c1"], 90, "the last restart")


def _redis_outage(run: Run, watch: str, terminate: str | None) -> None:
    """redis-stop, 5-8 s down, redis-start. During it: ``watch`` must report not ready, and
    ``terminate`` gets SIGTERM and must exit 0 within 30 s although Redis is down."""
    outage = run.rng.uniform(5.0, 8.0)
    run.services.run("redis-stop")
    down_at = time.monotonic()
    run.fault(f"redis-stop for {outage:.1f}s")
    leaving = None
    if terminate is not None:
        run.sleep(run.rng.uniform(0.5, 2.0))
        leaving = run.fleet.terminate(terminate)
        run.fault(f"SIGTERM {terminate} during the Redis outage")
    seen = ""
    while time.monotonic() - down_at < outage:
        if not seen and watch in run.fleet.slots:
            status, body = run.readiness(watch)
            if status == 503 and "redis" in body:
                seen = body.strip()
        run.sleep(0.25)
    run.services.run("redis-start")
    run.fault("redis-start")
    if watch in run.fleet.slots and not seen:
        run.violation(f"/readyz of {watch} never reported the {outage:.0f}s Redis outage")
    if leaving is not None:
        # An exit code other than 0, or later than STOP_LIMIT_S, is reported with every other stop.
        rc, seconds = run.fleet.reap(leaving)
        run.outcome.lines.append(f"SIGTERM during the Redis outage: exit code {rc} after {seconds:.1f}s")


def redis(run: Run) -> None:
    """A Redis restart (AOF on) mid-stream, later a Redis outage of 5-8 s with a SIGTERM in it."""
    run.fleet.start("c1")
    run.fleet.start("c2")
    run.begin_feeding()
    run.at_progress(run.rng.uniform(0.15, 0.35))
    run.wait_working()
    run.services.run("redis-restart")
    run.fault("redis-restart")
    run.wait_ready(["c1", "c2"], 60, "the Redis restart")
    run.at_progress(run.rng.uniform(0.5, 0.7))
    run.wait_working()
    _redis_outage(run, watch="c1", terminate="c2")
    run.wait_ready(["c1"], 60, "the Redis outage")
    run.fleet.start("c2")
    run.fault("start c2 again")


def _broker_fault(run: Run, name: str, inject: Callable[[], float]) -> None:
    """Run ``inject`` (returns how long the broker was away) while watching every instance's
    readiness: the broker being away must show in /readyz. It waits first until every instance
    owns partitions again: a fault landing while both still wait in a rebalance left over from
    the previous one (JoinGroup pending, nothing else in flight) has no request to time out, so
    nothing to report (seen once: a freeze 3 s after a restart's 30 s rebalance)."""
    run.wait_working()
    slots = list(run.fleet.slots)
    for slot in slots:
        run.fleet.wait_assigned(slot, 120)
    seen: set[str] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for slot in slots:
                status, body = run.readiness(slot)
                if status == 503 and "kafka" in body:
                    seen.add(slot)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        away = inject()
    finally:
        done.set()
        watcher.join()
    run.fault(f"{name} (broker away {away:.0f}s)")
    if away > 15:  # detection takes 5 to 15 s (stats interval, UNRESPONSIVE_S)
        if not seen:
            run.violation(f"no instance's /readyz reported the broker as unreachable during {name}")
        elif len(seen) < len(slots):
            silent = ", ".join(sorted(set(slots) - seen))
            run.note(f"/readyz of {silent} did not report the broker as unreachable during {name}")
    # Not strict: after a broker freeze, librdkafka (2.16) sometimes leaves an instance out of the
    # group for good (no partitions, no callbacks; docs/chaos.md). Its readiness then rightly says
    # the broker is not answering; it costs capacity, not correctness, so it is reported as a note.
    run.wait_ready(["c1", "c2"], 120, name, strict=False)


def broker(run: Run) -> None:
    """A broker restart (graceful) mid-stream; a broker freeze (SIGSTOP, like a long GC pause or a
    stalled VM: connections stay open, nothing answers, commits time out); a broker crash
    (kill -9) and start."""
    run.fleet.start("c1")
    run.fleet.start("c2")
    run.begin_feeding()
    run.at_progress(run.rng.uniform(0.1, 0.25))
    _broker_fault(run, "kafka-restart", lambda: run.services.run("kafka-restart"))
    run.sleep(run.rng.uniform(3.0, 8.0))
    freeze = run.rng.uniform(16.0, 25.0)
    _broker_fault(run, f"broker frozen (SIGSTOP) {freeze:.0f}s", lambda: run.services.freeze_kafka(freeze))
    run.sleep(run.rng.uniform(3.0, 8.0))

    def crash() -> float:
        took = run.services.run("kafka-kill")
        time.sleep(run.rng.uniform(1.0, 4.0))
        return took + run.services.run("kafka-start")

    _broker_fault(run, "kafka-kill + kafka-start", crash)


def rebalance(run: Run) -> None:
    """Three instances joining and leaving one group: SIGTERM (clean leave) and SIGKILL (the
    group notices after the 6 s session timeout). Each pod has its own per-process
    transactional.id, so a killed pod's open transaction is only aborted by the broker after
    transaction.timeout.ms; until then the new owner of its partitions must wait for their
    offsets. Right after each kill, instances join, so a rebalance interrupts that wait: the case
    in which librdkafka used to start the partitions from the beginning (see docs/chaos.md)."""
    steps: list[tuple[float | None, str, str]] = [
        (0.08, "start", "b"),
        (0.16, "start", "c"),
        (0.28, "term", "b"),
        (0.38, "kill", "c"),  # after a stall: likely with a transaction open
        (None, "start", "b"),  # b waits for c's pending offsets...
        (None, "start", "c"),  # ...and this rebalance interrupts the wait
        (0.70, "kill", "a"),
        (None, "start", "a"),
        (0.88, "term", "c"),
    ]
    run.fleet.start("a", stable_id=False)
    run.begin_feeding()
    for moment, action, slot in steps:
        if moment is None:
            run.sleep(run.rng.uniform(1.0, 3.0))
        else:
            run.at_progress(moment + run.rng.uniform(-0.03, 0.03))
        if action == "start":
            run.fleet.start(slot, stable_id=False, wait=False)
            run.fault(f"start {slot}")
        elif action == "term":
            rc, seconds = run.fleet.stop(slot)
            run.fault(f"SIGTERM {slot} (exit {rc} in {seconds:.1f}s)")
        else:
            run.wait_working()
            stall = run.rng.uniform(2.0, 4.0)
            run.fleet.pause(slot, stall)
            run.sleep(run.rng.uniform(0.0, 0.25))
            run.fleet.kill(slot)
            run.fault(f"kill -9 {slot} after a {stall:.1f}s SIGSTOP")


def offsets_back(run: Run) -> None:
    """The group's committed offsets go backwards, as the broker answered right after a crash in
    the broker scenario (docs/chaos.md): both instances stopped (SIGTERM, later kill -9 after a
    stall, so the floor of their last commits is not flushed at exit), the offsets moved back
    (halfway, later to the start: no offsets at all), the instances started again. The
    committed-offset floor in Redis must keep every record single."""
    run.fleet.start("a")
    run.fleet.start("b")
    run.begin_feeding()
    for low, high, share, how in ((0.25, 0.45, 0.5, "SIGTERM"), (0.6, 0.85, 0.0, "kill -9")):
        run.at_progress(run.rng.uniform(low, high))
        run.wait_working()
        for slot in ("a", "b"):
            if how == "SIGTERM":
                run.fleet.stop(slot)
            else:
                run.fleet.pause(slot, run.rng.uniform(1.0, 3.0))
                run.fleet.kill(slot)
        moved = run.move_group_back(share)
        back = sum(was - now for was, now in moved.values())
        run.fault(f"both stopped ({how}), group offsets moved back {back} records (to {share:.0%})")
        run.fleet.start("a", wait=False)
        run.fleet.start("b")


def alo_kill(run: Run) -> None:
    """As ``kill`` under at_least_once (the Run is created with that guarantee)."""
    kill(run)


def small(run: Run) -> None:
    """The pytest version: kill -9 twice, one Redis outage (with a SIGTERM in it), and a second
    instance joining and leaving (rebalances)."""
    run.fleet.start("a")
    run.begin_feeding()
    run.at_progress(run.rng.uniform(0.1, 0.2))
    run.wait_working()
    run.fleet.kill("a")
    run.fault("kill -9 a")
    run.fleet.start("a", wait=False)
    run.fleet.start("b")
    run.fault("start b")
    run.at_progress(run.rng.uniform(0.35, 0.5))
    run.wait_working()
    _redis_outage(run, watch="a", terminate="b")
    run.at_progress(run.rng.uniform(0.6, 0.75))
    run.wait_working()
    run.fleet.kill("a")
    run.fault("kill -9 a")
    run.sleep(run.rng.uniform(0.2, 1.0))
    run.fleet.start("a", wait=False)
    run.fleet.start("b", stable_id=False)
    run.fault("start b")
    run.wait_ready(["a", "b"], 90, "the faults")


@dataclass(frozen=True)
class Scenario:
    function: Callable[[Run], None]
    guarantee: str = "exactly_once"
    # Feed rate relative to --rate: the broker scenario's faults take minutes, and they should hit
    # consumers that have work in hand, not ones idling after the stream ended.
    rate_factor: float = 1.0
    windowed: bool = False  # the windowed stream (tests/chaos/windows.py), at its own steady rate
    redis_ha: bool = False  # on the Redis high-availability shape (primary, replica, Sentinel)
    cluster: bool = False  # on the three-broker cluster (tests/chaos/cluster_faults.py)
    env: dict[str, str] = field(default_factory=dict)  # the consumers' settings of this scenario


SCENARIOS: dict[str, Scenario] = {
    "kill": Scenario(kill),
    "redis": Scenario(redis),
    "broker": Scenario(broker, rate_factor=0.4),
    "rebalance": Scenario(rebalance),
    "alo": Scenario(alo_kill, "at_least_once"),
    "offsets-back": Scenario(offsets_back),
    "outage": Scenario(outage, windowed=True),
    "clocks": Scenario(clocks, windowed=True),
    "lagging": Scenario(lagging, windowed=True),
    "expiry-kills": Scenario(expiry_kills, windowed=True),
    "redis-failover": Scenario(redis_failover, redis_ha=True),
    "redis-stale": Scenario(redis_stale, redis_ha=True, env={"LEADS_REDIS_MIN_REPLICAS": "0"}),
    "redis-flush": Scenario(redis_flush),
    "redis-aof-cut": Scenario(redis_aof_cut),
    "zombie": Scenario(zombie),
    "cluster": Scenario(cluster, rate_factor=0.2, cluster=True),
    "fresh-kills": Scenario(fresh_kills),
    "baseline": Scenario(baseline),
    "small": Scenario(small),
}
DEFAULT = [
    "kill",
    "redis",
    "broker",
    "rebalance",
    "alo",
    "offsets-back",
    "outage",
    "clocks",
    "lagging",
    "expiry-kills",
    "redis-failover",
    "redis-stale",
    "redis-flush",
    "redis-aof-cut",
    "zombie",
    "cluster",
    "fresh-kills",
]
