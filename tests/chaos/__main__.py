"""`make chaos`: ``python -m tests.chaos [--events N] [--scenarios a,b] [--runs K] [--seed S]``.

Starts its own Kafka + Redis pair (CHAOS_KAFKA_PORT / CHAOS_REDIS_PORT, default 19092 / 16379,
state in .services-chaos/) unless it already answers, runs each scenario K times with its own
topics, prints one report per run, stops the pair if it started it, and exits 1 on any
violation (2 when the servers could not be started or the arguments are wrong). See docs/chaos.md.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
import traceback
from pathlib import Path

from harness.services import LocalServices
from tests.chaos.driver import Outcome, Run, log_root
from tests.chaos.scenarios import DEFAULT, SCENARIOS
from tests.chaos.services import chaos_cluster_services, chaos_ha_services, chaos_services
from tests.chaos.stream import Stream, generate
from tests.chaos.windows import generate_windowed


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000, help="records per run (default 30000)")
    parser.add_argument(
        "--windowed-events",
        type=int,
        default=6_000,
        help="records per run of the windowed scenarios (default 6000, fed at 150/s)",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT),
        help=f"comma-separated, from {', '.join(SCENARIOS)} (default {','.join(DEFAULT)})",
    )
    parser.add_argument("--runs", type=int, default=1, help="repeat each scenario K times (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first run (default: random)")
    parser.add_argument("--rate", type=float, default=400.0, help="records per second fed (default 400)")
    parser.add_argument(
        "--keep-services", action="store_true", help="leave the chaos Kafka and Redis running"
    )
    return parser


def run_one(
    name: str, services: LocalServices, stream: Stream, seed: int, rate: float, root: Path
) -> Outcome:
    scenario = SCENARIOS[name]
    directory = root / f"{name}-{seed}"
    run = Run(
        name,
        services,
        stream,
        rate * scenario.rate_factor,
        directory,
        seed,
        scenario.guarantee,
        env=scenario.env,
    )
    print(f"-- {name} (seed {seed}, logs in {directory})", flush=True)
    return run.execute(scenario.function)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [n.strip() for n in args.scenarios.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenarios: {', '.join(unknown)}", file=sys.stderr)
        return 2
    services = chaos_services()
    first_seed = args.seed if args.seed is not None else random.randrange(1_000_000)
    print(f"chaos: {len(names)} scenarios x {args.runs} runs, {args.events} events, first seed {first_seed}")
    print(f"chaos: Kafka {services.bootstrap}, Redis {services.redis_url}, {services.directory}", flush=True)
    started = time.monotonic()
    try:
        services.up(require_owned=True)
    except Exception as error:
        print(f"chaos: could not start Kafka and Redis: {error}", file=sys.stderr)
        return 2
    outcomes: list[Outcome] = []
    root = log_root()
    ha: LocalServices | None = None  # the Redis HA shape, started for the first scenario on it
    cluster: LocalServices | None = None  # the three-broker shape, likewise
    try:
        for run_index in range(args.runs):
            seed = first_seed + run_index
            stream = generate(args.events, seed)
            windowed = generate_windowed(args.windowed_events, seed)
            for name in names:
                try:
                    scenario = SCENARIOS[name]
                    chosen = windowed if scenario.windowed else stream
                    if scenario.redis_ha and ha is None:
                        ha = chaos_ha_services()
                        print(
                            f"chaos: Redis HA shape, Kafka {ha.bootstrap}, Sentinel {ha.sentinels}",
                            flush=True,
                        )
                        ha.up()
                    if scenario.cluster and cluster is None:
                        cluster = chaos_cluster_services()
                        print(f"chaos: three-broker cluster, Kafka {cluster.bootstrap}", flush=True)
                        cluster.up(require_owned=True)
                    on = ha if scenario.redis_ha and ha is not None else services
                    on = cluster if scenario.cluster and cluster is not None else on
                    outcome = run_one(name, on, chosen, seed, args.rate, root)
                except Exception:
                    outcome = Outcome(name, args.events)
                    outcome.violations.append(f"harness error:\n{traceback.format_exc()}")
                outcomes.append(outcome)
                print(outcome.render(), flush=True)
    finally:
        if not args.keep_services:
            services.stop_started()
            if ha is not None:
                ha.stop_started()
            if cluster is not None:
                cluster.stop_started()
    failed = [o for o in outcomes if not o.ok]
    print(
        f"\nchaos: {len(outcomes)} runs in {time.monotonic() - started:.0f}s, "
        f"{len(outcomes) - len(failed)} OK, {len(failed)} FAILED"
        + (f" ({', '.join(o.name for o in failed)})" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
