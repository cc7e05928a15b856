"""Fault scenarios on the windowed stream (tests/chaos/windows.py): short windows, outcomes fixed by
the records' arrival times (contract rule 8), whatever the faults do to the consumers."""

from __future__ import annotations

from pathlib import Path

from tests.chaos.driver import Run
from tests.chaos.windows import GRACE_S, TTL_S

CLOCK_DIR = str(Path(__file__).resolve().parent / "clock")


def outage(run: Run) -> None:
    """Every consumer stopped (kill -9) for longer than the pending TTL while the feed goes on, so
    Event 2s that reached Kafka in time wait in the backlog past their Event 1's deadline; twice.
    Every verified lead must be attributed, only the unverified ones expire."""
    run.fleet.start("c1")
    run.fleet.start("c2")
    run.begin_feeding()
    for moment in (run.rng.uniform(0.2, 0.35), run.rng.uniform(0.55, 0.7)):
        run.at_progress(moment)
        run.wait_working()
        down = run.rng.uniform(2.2, 3.0) * TTL_S
        run.fleet.kill("c1")
        run.fleet.kill("c2")
        run.fault(f"both consumers killed for {down:.0f}s (the TTL is {TTL_S:.0f}s)")
        run.sleep(down)
        run.fleet.start("c1", wait=False)
        run.fleet.start("c2")
    run.wait_ready(["c1", "c2"], 90, "the outages")


def clocks(run: Run) -> None:
    """Three instances whose own clocks are wrong (time.time only, sitecustomize.py in
    tests/chaos/clock): 30 s ahead, 30 s behind, and one stepped a day ahead mid-run. Leases,
    stamps and idle marks use Redis's clock, windows the arrival times: nothing may change."""
    run.begin_feeding()
    skews = {
        "ahead": {"CHAOS_CLOCK_OFFSET_S": "30"},
        "behind": {"CHAOS_CLOCK_OFFSET_S": "-30"},
        "stepped": {
            "CHAOS_CLOCK_STEP_S": "86400",
            "CHAOS_CLOCK_STEP_AFTER_S": f"{run.rng.uniform(10, 30):.0f}",
        },
    }
    for slot, env in skews.items():
        run.fleet.start(slot, env={"PYTHONPATH": CLOCK_DIR, **env})
        run.fault(f"start {slot} ({', '.join(f'{k}={v}' for k, v in env.items())})")
    run.at_progress(0.5)
    run.wait_working()
    run.fleet.kill("behind")  # its partitions move to the skewed others, expiries falling due meanwhile
    run.fault("kill -9 behind")
    run.sleep(run.rng.uniform(1.0, 3.0))
    run.fleet.start("behind", wait=False, env={"PYTHONPATH": CLOCK_DIR, **skews["behind"]})
    run.wait_ready(list(skews), 90, "the restart")


def lagging(run: Run) -> None:
    """Two instances; one frozen (SIGSTOP) again and again for longer than the orphan grace but
    within the session timeout, so its partitions lag the other's by more than the grace while it
    keeps them. Stories keyed apart put Event 1 and Event 2 on partitions of both: expiries must
    wait for the lagging partitions, and every lead verified in time is attributed."""
    run.fleet.start("c1")
    run.fleet.start("c2")
    run.begin_feeding()
    for moment in (0.15, 0.35, 0.55, 0.75):
        run.at_progress(moment + run.rng.uniform(-0.05, 0.05))
        run.wait_working()
        slot = run.rng.choice(["c1", "c2"])
        pause = run.rng.uniform(1.2, 1.4) * GRACE_S
        run.fleet.pause(slot, pause)
        run.fault(f"{slot} frozen {pause:.1f}s (the grace is {GRACE_S:.0f}s)")
    run.wait_ready(["c1", "c2"], 60, "the freezes")


def expiry_kills(run: Run) -> None:
    """kill -9 and rebalances while expiries and orphans fall due: claims lost with their
    claimant (the lease lapses, another instance reports the same record again), partitions
    moving while their marks hold the watermark."""
    run.fleet.start("c1")
    run.begin_feeding()
    steps = [
        (0.2, "kill", "c1"),
        (0.3, "start", "c2"),
        (0.45, "kill", "c2"),
        (0.6, "start", "c3"),
        (0.8, "kill", "c1"),
    ]
    for moment, action, slot in steps:
        run.at_progress(moment + run.rng.uniform(-0.04, 0.04))
        if action == "kill":
            run.wait_working()
            run.fleet.kill(slot)
            run.fault(f"kill -9 {slot}")
            run.sleep(run.rng.uniform(0.5, 2.0))
            run.fleet.start(slot, wait=False)
        else:
            run.fleet.start(slot, wait=False)
            run.fault(f"start {slot}")
    run.wait_ready(list(run.fleet.slots), 90, "the kills")
