"""The measurements of issue 6, each against the real consumer process, Kafka and Redis."""

from __future__ import annotations

import math
import subprocess
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench import spy, stats
from bench.kafka_io import OutputReader, paced_produce, preload
from bench.proc import Sample, Sampler, histogram_buckets
from bench.workload import Workload, generate, pending_leads
from harness.kafka import Topics, create_topics
from harness.process import ConsumerProcess
from harness.services import LocalServices

# The consumer's own settings that the bench does not vary stay at their defaults; these are the
# only ones it sets besides topics, group and prefix.
LOG_LEVEL = "WARNING"


@dataclass
class Context:
    services: LocalServices
    run_id: str
    workdir: Path
    batch_size: int
    batch_wait_ms: int | None
    keep: bool = False
    extra_env: dict[str, str] = field(default_factory=dict)  # --consumer-env, for every consumer
    topics: list[str] = field(default_factory=list)  # created, deleted at the end unless keep
    prefixes: dict[str, str] = field(default_factory=dict)  # phase label -> LEADS_REDIS_PREFIX

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.services.redis_url, socket_timeout=30)

    def topic_set(self, label: str) -> Topics:
        name = f"bench-{self.run_id}-{label}"
        topics = Topics(name, name, self.prefix(label))
        # On a cluster as production runs it: three replicas, two in sync for a write (acks=all).
        durable = {"min.insync.replicas": "2"} if self.services.brokers >= 3 else {}
        configs = {name: {**durable, **topics.configs().get(name, {})} for name in topics.all()}
        create_topics(topics.all(), 6, self.services.bootstrap, configs, min(3, self.services.brokers))
        self.topics += topics.all()
        return topics

    def prefix(self, label: str) -> str:
        """8 characters like the default "leadattr": key names count in Redis memory per lead."""
        if label not in self.prefixes:
            self.prefixes[label] = f"b{self.run_id[:5]}{len(self.prefixes):02d}"
        return self.prefixes[label]

    def consumer(
        self,
        name: str,
        topics: Topics,
        label: str,
        guarantee: str,
        batch_wait_ms: int | None = None,
        extra: dict[str, str] | None = None,
    ) -> ConsumerProcess:
        env = {
            "LEADS_KAFKA_BOOTSTRAP_SERVERS": self.services.bootstrap,
            "LEADS_REDIS_URL": self.services.redis_url,
            "LEADS_PROCESSING_GUARANTEE": guarantee,
            "LEADS_BATCH_SIZE": str(self.batch_size),
            "LEADS_LOG_LEVEL": LOG_LEVEL,
            **topics.env(),
            # Every phase (and every repeat) drains the same input with a group and Redis prefix of
            # its own: with the topic set's group, a phase after the first started at the end.
            "LEADS_CONSUMER_GROUP": f"bench-{self.run_id}-{label}",
            "LEADS_REDIS_PREFIX": self.prefix(label),
        }
        wait = batch_wait_ms if batch_wait_ms is not None else self.batch_wait_ms
        if wait is not None:
            env["LEADS_BATCH_WAIT_MS"] = str(wait)
        merged = env | self.extra_env | (extra or {})
        return ConsumerProcess(merged, self.workdir / f"{name}.log", self.workdir, clean=True)

    def forget_state(self, label: str) -> int:
        """Delete a phase's Redis keys (UNLINK, then wait for the lazy free), so the next phase
        measures Redis memory on a clean slate. Returns the number of keys deleted."""
        client = self.redis()
        deleted = delete_prefix(client, self.prefix(label))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and int(client.info("memory").get("lazyfree_pending_objects", 0)):
            time.sleep(0.1)
        return deleted


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    """UNLINK every key under ``prefix``, 5,000 a command; returns how many went."""
    deleted = 0
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=5000):
        batch.append(key)
        if len(batch) >= 5000:
            deleted += int(client.unlink(*batch))
            batch = []
    if batch:
        deleted += int(client.unlink(*batch))
    return deleted


def redis_counters(client: redis.Redis) -> dict[str, float]:
    """Redis' own CPU seconds and per-command calls/microseconds (INFO cpu, INFO commandstats)."""
    cpu = client.info("cpu")
    counters = {"cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}
    for name, value in client.info("commandstats").items():
        if isinstance(value, dict):
            command = name.removeprefix("cmdstat_")
            counters[f"{command}.calls"] = float(value.get("calls", 0))
            counters[f"{command}.usec"] = float(value.get("usec", 0))
    return counters


def redis_usage(before: dict[str, float], after: dict[str, float], events: float) -> dict[str, Any]:
    """What a phase cost Redis, per input event: CPU overall, and time inside each command."""
    if events <= 0:
        return {}
    commands = {}
    for key, value in after.items():
        if key.endswith(".usec"):
            command = key.removesuffix(".usec")
            usec = value - before.get(key, 0.0)
            calls = after.get(f"{command}.calls", 0.0) - before.get(f"{command}.calls", 0.0)
            if calls > 0:
                commands[command] = {"calls": int(calls), "us_per_event": round(usec / events, 1)}
    top = dict(sorted(commands.items(), key=lambda item: -item[1]["us_per_event"])[:8])
    return {
        "cpu_us_per_event": round(1e6 * (after["cpu_s"] - before["cpu_s"]) / events, 1),
        "commands": top,
    }


def preload_workload(ctx: Context, label: str, workload: Workload) -> tuple[Topics, dict[str, Any]]:
    topics = ctx.topic_set(label)
    seconds = preload(ctx.services.bootstrap, topics.input, workload.events)
    info = {
        "topic": topics.input,
        "events": len(workload),
        "mix": workload.counts,
        "avg_value_bytes": round(workload.payload_bytes() / max(1, len(workload)), 1),
        "preload_seconds": round(seconds, 2),
        "preload_events_per_s": round(len(workload) / seconds) if seconds else None,
    }
    return topics, info


def _cpu_between(samples: Sequence[Sample], t0: float, t1: float) -> dict[str, float]:
    """Cores used by each process between two instants (CPU seconds / wall seconds)."""
    before = min(samples, key=lambda s: abs(s.t - t0))
    after = min(samples, key=lambda s: abs(s.t - t1))
    span = after.t - before.t
    if span <= 0:
        return {}
    return {
        name: round((after.cpu_s[name] - before.cpu_s.get(name, 0.0)) / span, 2)
        for name in after.cpu_s
        if name in before.cpu_s
    }


def _rate_series(samples: Sequence[Sample], window_s: float = 2.0) -> list[tuple[float, float]]:
    """Events/s over a sliding window (the counter moves in whole batches, so raw deltas are spiky)."""
    series = []
    j = 0
    for b in samples[1:]:
        while j + 1 < len(samples) and samples[j + 1].t <= b.t - window_s:
            j += 1
        a = samples[j]
        if b.t > a.t:
            series.append((round(b.t, 2), round((b.consumed - a.consumed) / (b.t - a.t), 1)))
    return series


def _rss_growth(samples: Sequence[Sample], events: int) -> float | None:
    quarter = next((s for s in samples if s.consumed >= events / 4), None)
    if quarter is None or not samples[-1].rss_mb or not quarter.rss_mb:
        return None
    return round(max(samples[-1].rss_mb) - max(quarter.rss_mb), 1)


def _batch_stats(metrics: Sequence[dict[str, float]]) -> dict[str, Any]:
    def total(name: str) -> float:
        return sum(m.get(name, 0.0) for m in metrics)

    batches = total("leads_batch_size_count")
    return {
        "batches": int(batches),
        "avg_batch_events": round(total("leads_batch_size_sum") / batches, 1) if batches else None,
        "avg_batch_ms": round(1000 * total("leads_batch_duration_seconds_sum") / batches, 1)
        if batches
        else None,
        "transaction_aborts": int(total("leads_transaction_aborts_total")),
        "commit_failures": int(total("leads_commit_failures_total")),
        "redis_errors": int(total("leads_redis_errors_total")),
        "rebalances": int(
            sum(v for m in metrics for k, v in m.items() if k.startswith("leads_rebalances_total"))
        ),
    }


# Samples (every 0.5 s) a drain's rate must rest on, between 10 % and 90 % of its events.
MIN_WINDOW_SAMPLES = 3


def throughput(
    ctx: Context,
    label: str,
    topics: Topics,
    events: int,
    guarantee: str,
    consumers: int = 1,
    timeout_s: float | None = None,
    profile: str | None = None,
    extra: dict[str, str] | None = None,
    also: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Drain a pre-loaded topic; the rate is taken between 10 % and 90 % of the events.

    ``profile`` ("cpu" or "wall") samples the first consumer with py-spy meanwhile; ``extra``:
    settings of this phase's consumers; ``also``: more processes whose CPU is counted (name -> pid)."""
    timeout = timeout_s if timeout_s is not None else 20 + events / 2500
    procs = [ctx.consumer(f"{label}-{i}", topics, label, guarantee, extra=extra) for i in range(consumers)]
    sampler = Sampler(procs, {**ctx.services.pids(), **(also or {})})
    print(f"bench: {label}: {consumers} consumer(s), {guarantee}, {events:,} events", flush=True)
    spy_out = ctx.workdir / f"{label}-{profile}.pyspy.txt"
    recorder = None
    client = ctx.redis()
    redis_before = redis_counters(client)
    try:
        for proc in procs:
            proc.start()
        sampler.start()
        if profile:
            time.sleep(1.0)  # let the interpreter come up before py-spy attaches
            recorder = spy.record(procs[0].pid, spy_out, idle=profile == "wall")
            if recorder is None:
                print("bench: py-spy not found; `.venv/bin/pip install py-spy` to profile", flush=True)
        complete = sampler.wait_for(events, timeout)
        sampler.stop()
    finally:
        exits = [proc.stop() for proc in procs]
        if recorder is not None:
            try:
                recorder.wait(30)
            except subprocess.TimeoutExpired:
                recorder.kill()
    redis_after = redis_counters(client)
    # The rate comes from samples every consumer answered (and the first, taken before they
    # started, when nothing was consumed): a count held back by a consumer that answered late
    # made two consumers' drains read 180,000-270,000 events/s in a window of under a second.
    samples = [s for i, s in enumerate(sampler.samples) if s.answered or i == 0]
    times, counts = [s.t for s in samples], [s.consumed for s in samples]
    done = sampler.samples[-1].consumed
    middle = stats.middle_rate(times, counts, events if complete else done)
    if middle is not None and sum(middle[1] <= t <= middle[2] for t in times) < MIN_WINDOW_SAMPLES:
        print(
            f"bench: {label}: under {MIN_WINDOW_SAMPLES} answered samples between 10 % and 90 % of the events: no rate"
        )
        middle = None
    cores = _cpu_between(samples, middle[1], middle[2]) if middle else {}
    result: dict[str, Any] = {
        "phase": label,
        "guarantee": guarantee,
        "consumers": consumers,
        "batch_size": ctx.batch_size,
        "events": events,
        "consumed": int(done),
        "complete": complete,
        "exit_codes": exits,
        "events_per_s": round(middle[0]) if middle else None,
        "window_s": [round(middle[1], 2), round(middle[2], 2)] if middle else None,
        "first_event_s": stats.crossing_time(times, counts, 1),
        "all_events_s": stats.crossing_time(times, counts, events),
        "cpu_cores": cores,
        # CPU time per event of each process: less sensitive to a busy machine than events/s.
        "cpu_us_per_event": {k: round(1e6 * v / middle[0], 1) for k, v in cores.items()} if middle else {},
        "peak_rss_mb": [round(x, 1) for x in sampler.peak_rss_mb],
        **_batch_stats(sampler.last_metrics),
        "redis": redis_usage(redis_before, redis_after, done),
        "series": {
            "rate": _rate_series(samples),
            "rss_mb": [(round(s.t, 2), round(max(s.rss_mb), 1)) for s in samples],
        },
    }
    if recorder is not None and spy_out.exists():
        result["profile"] = {"mode": profile, "file": str(spy_out), **spy.summarise(spy_out)}
    if not ctx.keep:
        ctx.forget_state(label)
    return result


def latency(
    ctx: Context,
    label: str,
    rate: float,
    duration_s: float,
    warmup_s: float = 2.0,
    guarantee: str = "exactly_once",
    batch_wait_ms: int | None = None,
    consumers: int = 1,
) -> dict[str, Any]:
    """Offer ``rate`` events/s to running consumers (one group) and time each published record
    from its input record's timestamp to (a) its output record's timestamp and (b) the moment a
    read_committed reader receives it (visible downstream, i.e. after the transaction commit)."""
    topics = ctx.topic_set(label)
    total_s = warmup_s + duration_s
    workload = generate(int(rate * total_s), seed=11, max_gap=int(rate))  # verification within ~1 s
    procs = [ctx.consumer(f"{label}-{i}", topics, label, guarantee, batch_wait_ms) for i in range(consumers)]
    sampler = Sampler(procs, ctx.services.pids())
    print(
        f"bench: {label}: {rate:,.0f} events/s offered to {consumers} consumer(s) for "
        f"{warmup_s:.0f}+{duration_s:.0f} s",
        flush=True,
    )
    reader = OutputReader(ctx.services.bootstrap, [topics.attributed, topics.dead_letter])
    exit_codes: list[int | None] = []
    try:
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.wait_ready()
        reader.start()
        sampler.start()
        produce_started = sampler.elapsed()
        run = paced_produce(ctx.services.bootstrap, topics.input, workload.events, rate, total_s)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(reader.seen) < run.expected_outputs:
            time.sleep(0.1)
        time.sleep(0.5)
        sampler.stop()
    finally:
        reader.stop()
        exit_codes = [proc.stop() for proc in procs]

    first_ms = min(run.sent_ms.values()) if run.sent_ms else 0
    measured_from = first_ms + int(warmup_s * 1000)
    visible: list[float] = []
    record: list[float] = []
    by_second: dict[int, list[float]] = defaultdict(list)
    matched = 0
    for seen in reader.seen:
        sent = run.sent_ms.get(seen.key)
        if sent is None:
            continue
        matched += 1
        if sent < measured_from:
            continue
        visible.append(seen.visible_ms - sent)
        record.append(seen.record_ms - sent)
        by_second[(sent - first_ms) // 1000].append(seen.visible_ms - sent)
    # Outputs that never became visible within the drain time count as slower than anything seen.
    expected_measured = sum(1 for sent in run.sent_ms.values() if sent >= measured_from)
    missing = max(0, expected_measured - len(visible))
    visible.sort()
    record.sort()
    visible += [math.inf] * missing
    record += [math.inf] * missing
    metrics = sampler.last_metrics[0]
    buckets = histogram_buckets(metrics, "leads_processing_latency_seconds")

    def summary(values: list[float]) -> dict[str, float | None]:
        def ms(value: float) -> float | None:  # None: not measurable (outputs missing or none at all)
            return None if math.isinf(value) or math.isnan(value) else round(value, 1)

        return {
            "p50_ms": ms(stats.percentile(values, 0.50)),
            "p95_ms": ms(stats.percentile(values, 0.95)),
            "p99_ms": ms(stats.percentile(values, 0.99)),
            "max_ms": ms(values[-1]) if values else None,
        }

    series = [
        (
            round(produce_started + second + 0.5, 1),
            round(stats.percentile(sorted(v), 0.5), 1),
            round(stats.percentile(sorted(v), 0.99), 1),
        )
        for second, v in sorted(by_second.items())
    ]
    result: dict[str, Any] = {
        "phase": label,
        "guarantee": guarantee,
        "consumers": consumers,
        "batch_size": ctx.batch_size,
        "batch_wait_ms": batch_wait_ms if batch_wait_ms is not None else ctx.batch_wait_ms,
        "offered_events_per_s": rate,
        "achieved_offered_events_per_s": round(run.sent / run.seconds) if run.seconds else None,
        "producer_max_behind_events": run.max_behind,
        "seconds": duration_s,
        "warmup_s": warmup_s,
        "sent": run.sent,
        "expected_outputs": run.expected_outputs,
        "outputs_matched": matched,
        "measured_outputs": len(visible) - missing,
        "missing_outputs": missing,
        "visible": summary(visible),
        "record_timestamp": summary(record),
        "consumer_histogram": {
            "p50_ms": round(1000 * stats.histogram_quantile(0.50, buckets), 1),
            "p99_ms": round(1000 * stats.histogram_quantile(0.99, buckets), 1),
        },
        "peak_rss_mb": [round(x, 1) for x in sampler.peak_rss_mb],
        "cpu_cores": _cpu_between(sampler.samples, produce_started, sampler.samples[-1].t),
        "exit_codes": exit_codes,
        **_batch_stats(sampler.last_metrics),
        "series": {
            "latency_ms": series,
            "rate": _rate_series(sampler.samples),
            "rss_mb": [(round(s.t, 2), round(max(s.rss_mb), 1)) for s in sampler.samples],
        },
    }
    if not ctx.keep:
        ctx.forget_state(label)
    return result


def pending_memory(ctx: Context, label: str, leads: int, events: int) -> dict[str, Any]:
    """Load ``leads`` pending leads (deferred Event 1s never verified) through the consumer, in an
    input of ``events`` records (padded with same-size records that leave no state): Redis
    used_memory after minus before, per lead, and the consumer's RSS meanwhile and after.

    Equal input sizes matter: librdkafka pre-fetches up to queued.max.messages.kbytes (64 MB by
    default) of the backlog into the consumer's memory, so a larger *input* alone raises the RSS."""
    workload = pending_leads(leads, events, seed=leads)
    topics, info = preload_workload(ctx, label, workload)
    client = ctx.redis()
    before = int(client.info("memory")["used_memory"])
    proc = ctx.consumer(f"{label}-0", topics, label, "exactly_once")
    sampler = Sampler([proc], ctx.services.pids())
    print(f"bench: {label}: {leads:,} pending leads", flush=True)
    try:
        proc.start()
        sampler.start()
        complete = sampler.wait_for(events, 20 + events / 2000)
        sampler.stop()
    finally:
        exit_code = proc.stop()  # SIGTERM flushes the forgotten journal entries too
    after = int(client.info("memory")["used_memory"])
    prefix = ctx.prefix(label)
    pending = int(client.get(f"{prefix}:pending") or 0)
    state_keys = 0
    sizes: list[int] = []
    blobs: list[int] = []
    for key in client.scan_iter(match=f"{prefix}:s:*", count=5000):
        state_keys += 1
        if len(sizes) < 300:
            sizes.append(int(client.memory_usage(key, samples=0) or 0))
            blobs.append(len(client.get(key) or b""))
    journal_keys = sum(1 for _ in client.scan_iter(match=f"{prefix}:j:*", count=5000))
    # The wake index: the zset of seconds and one list per second (consumer/state/store.py).
    index_bytes = int(client.memory_usage(f"{prefix}:wake", samples=0) or 0)
    seconds: list[bytes] = client.zrange(f"{prefix}:wake", 0, -1)  # type: ignore[assignment]
    for second in seconds:
        index_bytes += int(client.memory_usage(f"{prefix}:wake:{second.decode()}", samples=0) or 0)
    samples = sampler.samples
    times, counts = [s.t for s in samples], [s.consumed for s in samples]
    middle = stats.middle_rate(times, counts, events)
    result: dict[str, Any] = {
        "phase": label,
        "pending_leads": leads,
        "events": events,
        "complete": complete,
        "exit_codes": [exit_code],
        "pending_counter": pending,
        "state_keys": state_keys,
        "journal_keys_left": journal_keys,
        "redis_used_memory_before": before,
        "redis_used_memory_after": after,
        "redis_bytes_per_pending": round((after - before) / leads, 1),
        "state_key_bytes_avg": round(sum(sizes) / len(sizes), 1) if sizes else None,
        "state_blob_bytes_avg": round(sum(blobs) / len(blobs), 1) if blobs else None,
        "wake_index_bytes_per_lead": round(index_bytes / max(1, pending), 1),
        "peak_rss_mb": [round(x, 1) for x in sampler.peak_rss_mb],
        "final_rss_mb": [round(x, 1) for x in samples[-1].rss_mb],
        # Growth while the pending leads went from a quarter of the final number to all of them:
        # per-lead state in the process would show here, a per-batch working set would not.
        "rss_growth_last_75pct_mb": _rss_growth(samples, events),
        "events_per_s": round(middle[0]) if middle else None,
        "input": info,
        "series": {"rss_mb": [(round(s.t, 2), round(max(s.rss_mb), 1)) for s in samples]},
    }
    if not ctx.keep:
        ctx.forget_state(label)
    return result
