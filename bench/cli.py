"""`python -m bench`: run the measurements, print the table, write report.json and bench.png."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaException

from bench import jit, phases, report
from bench.kafka_io import restore_broker_configs, set_broker_configs
from bench.replica import Replica
from bench.services import bench_services
from bench.workload import Workload, check_encoding, generate
from consumer import compiled_modules
from harness.kafka import Topics, delete_topics
from harness.process import REPO

ALL_PHASES = ("eos", "durable", "alo", "two", "latency", "memory")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events per throughput phase (200,000)")
    parser.add_argument(
        "--brokers",
        type=int,
        choices=(1, 3),
        default=1,
        help="Kafka nodes: 1, or a three-node cluster with topics at replication factor 3 (1)",
    )
    parser.add_argument("--batch-size", type=int, default=2000, help="LEADS_BATCH_SIZE (2000)")
    parser.add_argument(
        "--batch-wait-ms",
        type=int,
        default=None,
        help="LEADS_BATCH_WAIT_MS for all phases (consumer default)",
    )
    parser.add_argument(
        "--rate", type=float, default=5000, help="offered events/s in the latency phase (5000)"
    )
    parser.add_argument(
        "--latency-seconds", type=float, default=20, help="measured seconds of offered load (20)"
    )
    parser.add_argument(
        "--latency-waits",
        default="default,10",
        help="LEADS_BATCH_WAIT_MS values, one latency run each; 'default' = the consumer's own (default,10)",
    )
    parser.add_argument(
        "--pending",
        type=int,
        default=10_000,
        help="pending leads of the small memory run; the large run has 10x, both read 10x records (10,000)",
    )
    parser.add_argument(
        "--phases", default=",".join(ALL_PHASES), help=f"comma-separated subset of {','.join(ALL_PHASES)}"
    )
    parser.add_argument(
        "--consumer-env",
        action="append",
        default=[],
        metavar="LEADS_X=VALUE",
        help="extra consumer setting for every phase (repeatable), e.g. LEADS_KAFKA_QUEUED_MAX_MESSAGES_KBYTES=16384",
    )
    parser.add_argument(
        "--profile",
        choices=("cpu", "wall"),
        help="sample the exactly_once consumer with py-spy (cpu: on-CPU only; wall: waits included)",
    )
    parser.add_argument(
        "--out", type=Path, default=REPO / "bench-results", help="results folder (bench-results)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the bench's topics and Redis keys afterwards"
    )
    parser.add_argument(
        "--keep-services",
        action="store_true",
        help="leave Kafka and Redis running even if the bench started them",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="drains per throughput phase; the median is reported, with every run (3)",
    )
    parser.add_argument(
        "--broker-config",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="dynamic broker setting for the whole run, restored afterwards (repeatable), e.g. "
        "transaction.partition.verification.enable=false: what a broker setting costs",
    )
    parser.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the unreported drains and paced runs that warm the broker up before the measured phases",
    )
    return parser


def _machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def _git_revision() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "consumer"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() + ("+dirty-consumer" if dirty.stdout.strip() else "")


def _run_phase(
    result: dict[str, Any], label: str, run: Callable[[], dict[str, Any]], broker_pid: int | None
) -> None:
    """A phase that fails (a consumer that crashed, a broker that went away) is reported as such;
    the other phases still run and the report is still written. With each phase, the share of a
    core the broker's JIT compiler took meanwhile (bench/jit.py; None when the broker is not ours)."""
    try:
        watch = jit.Watch(broker_pid)
        phase = run()
        phase["broker_jit_cores"] = watch.cores()
        result["phases"].append(phase)
    except Exception as error:
        print(f"bench: {label} failed: {type(error).__name__}: {error}", flush=True)
        result["phases"].append({"phase": label, "error": f"{type(error).__name__}: {error}"})


def _drain(
    ctx: phases.Context,
    topics: Topics,
    events: int,
    guarantee: str,
    consumers: int,
    profile: str | None,
    label: str,
) -> dict[str, Any]:
    return phases.throughput(ctx, label, topics, events, guarantee, consumers, profile=profile)


def _durable_drain(ctx: phases.Context, topics: Topics, events: int, label: str) -> dict[str, Any]:
    """exactly_once with a replica that must acknowledge every batch's writes (WAIT): the setup the
    README recommends for a primary with replicas (the state changelog is on in every phase)."""
    replica = Replica(ctx.services.redis_port, ctx.workdir).start()
    assert replica.proc is not None
    try:
        # The replica shares the machine's two cores here (in production it has its own): its CPU
        # per event is reported beside the others'.
        phase = phases.throughput(
            ctx,
            label,
            topics,
            events,
            "exactly_once",
            extra={"LEADS_REDIS_MIN_REPLICAS": "1"},
            also={"redis_replica": replica.proc.pid},
        )
    finally:
        replica.stop()
    phase["redis_replicas"] = 1
    return phase


# Warm-up drains until the broker's compiler takes less than this share of a core during one, or
# this many drains. A fresh broker's compiler took 0.3-0.7 of a core in its first minutes
# (bench/jit.py); in a fresh `make bench` (15:41 UTC) 0.24 during the first drain, then 0.08, 0.10,
# 0.11, 0.17, 0.09: after the first it recompiles in the background at about a tenth of a core,
# drains or not, and more drains buy nothing.
WARM_JIT_CORES = 0.1
WARMUP_DRAINS_MAX = 4
LATENCY_WARMUPS_MAX = 3


def _until_warm(
    what: str, run: Callable[[int], dict[str, Any]], broker_pid: int | None, limit: int
) -> list[dict[str, Any]]:
    """``run(i)`` (unreported) until the broker's compiler takes less than WARM_JIT_CORES during one,
    or ``limit`` times; once when the compiler cannot be watched (a broker the bench did not start).
    Each run's result, with the compiler's share of a core."""
    runs: list[dict[str, Any]] = []
    for i in range(limit):
        watch = jit.Watch(broker_pid)
        outcome = run(i)
        cores = watch.cores()
        runs.append({**outcome, "broker_jit_cores": cores})
        print(f"bench: {what} {i + 1}: the broker's JIT compiler took {cores} of a core", flush=True)
        if cores is None or cores < WARM_JIT_CORES:
            break
    return runs


def _warm_up(ctx: phases.Context, topics: Topics, events: int, broker_pid: int | None) -> dict[str, Any]:
    """Unreported exactly_once drains of the same input until the broker is warm. A broker that has
    just started is slow for minutes (JIT compilation): exactly_once drains of 100,000 events on a
    fresh broker cost it 26, 28, 16, 13, 13 us of CPU per event one after the other, and 4-9 on a
    broker up for 20 minutes (measured, 10:15-10:17 UTC). Production brokers are warm."""

    def drain(i: int) -> dict[str, Any]:
        warm = phases.throughput(ctx, f"warmup-{i + 1}", topics, events, "exactly_once")
        return {k: warm[k] for k in ("events_per_s", "cpu_us_per_event")}

    drains = _until_warm("warm-up drain", drain, broker_pid, WARMUP_DRAINS_MAX)
    return {**drains[-1], "drains": drains}


def _median_of(repeat: int, label: str, drain: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    """``repeat`` drains of the same input (each with its own group and Redis prefix): the one
    with the median rate is reported, and every run's rate and CPU per event with it. Drains
    minutes apart differ by a third on the shared machine (docs/performance.md): one run says
    little, the median and the spread say more."""
    runs = [drain(label if repeat == 1 else f"{label}-{i + 1}") for i in range(max(1, repeat))]
    ranked = sorted(runs, key=lambda run: run["events_per_s"] or 0)
    median = dict(ranked[(len(ranked) - 1) // 2])
    median["phase"] = label
    median["runs"] = [
        {k: run[k] for k in ("events_per_s", "cpu_us_per_event", "complete", "window_s")} for run in runs
    ]
    return median


def _name_values(items: list[str], option: str, form: str, prefix: str = "") -> dict[str, str] | None:
    """NAME=VALUE items as a dict; None (after saying so) when one is not of that form."""
    values: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not name.startswith(prefix):
            print(f"bench: {option} takes {form}, got {item!r}")
            return None
        values[name] = value
    return values


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pipeline"]:
        from bench import pipeline  # noqa: PLC0415

        return pipeline.main(argv[1:])
    if argv[:1] == ["sweep"]:
        from bench import sweep  # noqa: PLC0415

        return sweep.main(argv[1:])
    if argv[:1] == ["floor"]:
        from bench import floor  # noqa: PLC0415

        return floor.main(argv[1:])
    args = _parser().parse_args(argv)
    selected = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown = sorted(set(selected) - set(ALL_PHASES))
    if unknown:
        print(f"bench: unknown phase(s) {unknown}; choose from {ALL_PHASES}")
        return 2
    try:
        waits = [
            None if w.strip() == "default" else int(w) for w in args.latency_waits.split(",") if w.strip()
        ]
    except ValueError:
        print(f"bench: --latency-waits takes 'default' or integers, got {args.latency_waits!r}")
        return 2
    extra_env = _name_values(args.consumer_env, "--consumer-env", "LEADS_NAME=VALUE", "LEADS_")
    broker_configs = _name_values(args.broker_config, "--broker-config", "NAME=VALUE")
    if extra_env is None or broker_configs is None:
        return 2
    started = time.monotonic()
    run_id = uuid.uuid4().hex[:8]
    out: Path = args.out
    workdir = out / "logs" / run_id
    workdir.mkdir(parents=True, exist_ok=True)
    services = bench_services(args.brokers)
    result: dict[str, Any] = {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python -m bench " + " ".join(argv),
        "revision": _git_revision(),
        # The consumer subprocesses import the same checkout: its compiled modules are theirs.
        "compiled_modules": compiled_modules(),
        "machine": _machine(),
        "settings": {
            "events": args.events,
            "batch_size": args.batch_size,
            "batch_wait_ms": args.batch_wait_ms,
            "rate": args.rate,
            "latency_seconds": args.latency_seconds,
            "latency_waits": args.latency_waits,
            "pending": args.pending,
            "consumer_env": extra_env,
            "broker_config": broker_configs,
            "phases": selected,
            "kafka": services.bootstrap,
            "brokers": args.brokers,
            "redis": services.redis_url,
        },
        "phases": [],
    }

    # The workload is generated while Kafka starts (tens of seconds when it is not running yet).
    generated: dict[str, Workload] = {}

    failures: list[BaseException] = []

    def make_workload() -> None:
        try:
            workload = generate(args.events)
            check_encoding(workload)
            generated["main"] = workload
        except Exception as error:  # re-raised in the main thread
            failures.append(error)

    generator = threading.Thread(target=make_workload, name="bench-workload")
    drains = bool({"eos", "durable", "alo", "two"} & set(selected))
    if drains:
        generator.start()
    ctx = phases.Context(
        services, run_id, workdir, args.batch_size, args.batch_wait_ms, args.keep, extra_env=extra_env
    )
    replaced: dict[str, dict[str, str | None]] = {}
    try:
        services.up()
        broker_pid = services.pids().get("kafka")
        if broker_configs:
            try:
                replaced = set_broker_configs(services.bootstrap, broker_configs)
            except (ValueError, KafkaException) as error:
                print(f"bench: --broker-config refused: {error}")
                return 2
            print(f"bench: broker settings for this run: {broker_configs}", flush=True)
        if drains:
            generator.join()
            if failures:
                raise failures[0]
            workload = generated["main"]
            topics, info = phases.preload_workload(ctx, "main", workload)
            result["input"] = info
            print(
                f"bench: pre-loaded {info['events']:,} events ({info['avg_value_bytes']} bytes avg) "
                f"in {info['preload_seconds']} s",
                flush=True,
            )
            if not args.no_warmup:
                result["warmup"] = _warm_up(ctx, topics, len(workload), broker_pid)
            if "durable" in selected:
                label = "throughput_exactly_once_durable"
                _run_phase(
                    result,
                    label,
                    partial(
                        _median_of, args.repeat, label, partial(_durable_drain, ctx, topics, len(workload))
                    ),
                    broker_pid,
                )
            for name, label, guarantee, consumers in (
                ("eos", "throughput_exactly_once", "exactly_once", 1),
                ("alo", "throughput_at_least_once", "at_least_once", 1),
                ("two", "throughput_two_consumers", "exactly_once", 2),
            ):
                if name in selected:
                    profile = args.profile if name == "eos" else None
                    _run_phase(
                        result,
                        label,
                        partial(
                            _median_of,
                            args.repeat,
                            label,
                            partial(_drain, ctx, topics, len(workload), guarantee, consumers, profile),
                        ),
                        broker_pid,
                    )
        if "latency" in selected:
            if not args.no_warmup:
                # Paced traffic in small batches runs broker code the drains do not: in a fresh
                # `make bench` the broker's JIT compiler took 0.41 of a core during the first
                # latency phase and 0.08-0.15 during the next three (15:45 UTC); after one
                # unreported run, 0.48 during it and still 0.18 in the first measured (16:00).
                def paced(i: int) -> dict[str, Any]:
                    run = phases.latency(ctx, f"latency_warmup_{i + 1}", args.rate, args.latency_seconds)
                    return {"p99_ms": run["visible"]["p99_ms"]}

                result["latency_warmup"] = {
                    "runs": _until_warm("latency warm-up", paced, broker_pid, LATENCY_WARMUPS_MAX)
                }
            for wait in waits:
                label = "latency" if wait is None else f"latency_wait_{wait}ms"
                _run_phase(
                    result,
                    label,
                    partial(phases.latency, ctx, label, args.rate, args.latency_seconds, batch_wait_ms=wait),
                    broker_pid,
                )
            # Without transactions: what the commit of each batch's transaction costs in latency.
            _run_phase(
                result,
                "latency_at_least_once",
                partial(
                    phases.latency,
                    ctx,
                    "latency_at_least_once",
                    args.rate,
                    args.latency_seconds,
                    guarantee="at_least_once",
                ),
                broker_pid,
            )
            # The same offered load shared by two processes: latency with capacity to spare.
            _run_phase(
                result,
                "latency_two_consumers",
                partial(
                    phases.latency, ctx, "latency_two_consumers", args.rate, args.latency_seconds, consumers=2
                ),
                broker_pid,
            )
        if "memory" in selected:
            if not {"eos", "alo", "two", "latency"} & set(selected):
                # A Redis that nothing has used yet spends ~400 KB on first use (measured: 407 vs
                # 366 bytes per lead over 10,000 leads, 366 both ways over 100,000), a cost of the
                # server, not of the leads. The other phases warm it up; alone, this run does.
                phases.pending_memory(ctx, "pending_warmup", args.pending // 10, args.pending)
                ctx.forget_state("pending_warmup")
            # Both runs read the same number of input records; only the pending leads differ (10x).
            events = 10 * args.pending
            for label, leads in (("pending_small", args.pending), ("pending_large", 10 * args.pending)):
                _run_phase(
                    result, label, partial(phases.pending_memory, ctx, label, leads, events), broker_pid
                )
    finally:
        if replaced:
            restore_broker_configs(services.bootstrap, replaced)
        if not args.keep:
            delete_topics(ctx.topics, services.bootstrap)
        if not args.keep_services:
            services.stop_started()

    result["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds"] = round(time.monotonic() - started, 1)
    result["redis_prefixes"] = ctx.prefixes
    all_rows = report.rows(result)
    result["table"] = [r.as_dict() for r in all_rows]
    report.write_json(result, out / "report.json")
    report.chart(result, out / "bench.png")
    print()
    print(report.table(all_rows))
    details = report.details_text(result)
    if details:
        print("\n" + details)
    profile = report.profile_text(result)
    if profile:
        print("\n" + profile)
    print(
        f"\nload average before {result['machine']['load_before']}, after {result['machine']['load_after']} "
        f"({result['machine']['cpus']} CPUs); {result['seconds']} s in all; consumer at {result['revision']}, "
        f"{len(result['compiled_modules'])} compiled modules"
    )
    print(f"report: {out / 'report.json'}, chart: {out / 'bench.png'}, consumer logs: {workdir}")
    return 1 if any("error" in p for p in result["phases"]) else 0
