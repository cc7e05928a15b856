"""A sampler that reads the consumers' /metrics and their RSS/CPU (psutil) every half second, and the
broker's and Redis's CPU."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import psutil

from harness.process import ConsumerProcess


def histogram_buckets(metrics: dict[str, float], name: str) -> list[tuple[float, float]]:
    prefix = f'{name}_bucket{{le="'
    buckets = []
    for key, value in metrics.items():
        if key.startswith(prefix):
            bound = key[len(prefix) : -2]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), value))
    return sorted(buckets)


@dataclass
class Sample:
    t: float  # seconds since the sampler started
    consumed: float  # leads_events_consumed_total, summed over the consumers
    rss_mb: list[float]  # per consumer
    cpu_s: dict[str, float]  # cumulative CPU seconds: "consumer" (sum), "kafka", "redis"
    # Every consumer answered /metrics for this sample. Otherwise ``consumed`` holds an older
    # count of the one that did not (starting up, or its HTTP thread starved on a busy machine).
    answered: bool = True


@dataclass
class Sampler:
    consumers: list[ConsumerProcess]
    services: dict[str, int] = field(default_factory=dict)  # name -> pid, for CPU accounting
    interval_s: float = 0.5
    samples: list[Sample] = field(default_factory=list)
    last_metrics: list[dict[str, float]] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._service_ps: dict[str, Any] = {}
        self._consumer_ps: dict[int, Any] = {}  # consumer's pid -> its psutil handle, once started
        for name, pid in self.services.items():
            try:
                self._service_ps[name] = psutil.Process(pid)
            except psutil.Error:
                continue
        self.peak_rss_mb = [0.0] * len(self.consumers)
        self.last_metrics = [{} for _ in self.consumers]

    def start(self) -> Sampler:
        self.sample()
        self._thread.start()
        return self

    def elapsed(self) -> float:
        return time.monotonic() - self._started

    def sample(self) -> Sample:
        consumed = 0.0
        answered = True
        rss: list[float] = []
        cpu: dict[str, float] = {"consumer": 0.0}
        for i, consumer in enumerate(self.consumers):
            # Not serving yet (starting) or already gone: keep the last values.
            try:
                self.last_metrics[i] = consumer.metrics()
            except (OSError, urllib.error.URLError):
                answered = False
            consumed += self.last_metrics[i].get("leads_events_consumed_total", 0.0)
            try:
                ps = self._handle(consumer)
                mb = ps.memory_info().rss / 2**20
                times = ps.cpu_times()
                cpu["consumer"] += times.user + times.system
            except (psutil.Error, AttributeError):
                mb = 0.0
            rss.append(mb)
            self.peak_rss_mb[i] = max(self.peak_rss_mb[i], mb)
        for name, ps in self._service_ps.items():
            try:
                times = ps.cpu_times()
                cpu[name] = times.user + times.system
            except psutil.Error:
                continue
        sample = Sample(self.elapsed(), consumed, rss, cpu, answered)
        self.samples.append(sample)
        return sample

    def _handle(self, consumer: ConsumerProcess) -> Any:
        """The psutil handle of a started consumer (AttributeError before it starts)."""
        if consumer.proc is None:
            raise AttributeError("not started")
        if consumer.pid not in self._consumer_ps:
            self._consumer_ps[consumer.pid] = psutil.Process(consumer.pid)
        return self._consumer_ps[consumer.pid]

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()

    def wait_for(self, consumed: float, timeout_s: float) -> bool:
        """Until the consumers together counted ``consumed`` events; False on timeout or a crash."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            last = self.samples[-1] if self.samples else None
            if last is not None and last.consumed >= consumed:
                return True
            if not all(c.alive() for c in self.consumers):
                return False
            time.sleep(0.1)
        return False
