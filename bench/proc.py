"""The real consumer as a child process (`python -m consumer.cli run`), and a sampler that reads
its /metrics and its RSS/CPU (psutil) every half second."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psutil

_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_leftovers() -> None:
    """Never leave a consumer behind, whatever way the bench exits."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()


atexit.register(_kill_leftovers)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text format -> {"name{labels}": value} (labels as written by the client)."""
    values: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        try:
            values[key] = float(value)
        except ValueError:
            continue
    return values


def histogram_buckets(metrics: dict[str, float], name: str) -> list[tuple[float, float]]:
    prefix = f'{name}_bucket{{le="'
    buckets = []
    for key, value in metrics.items():
        if key.startswith(prefix):
            bound = key[len(prefix) : -2]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), value))
    return sorted(buckets)


class ConsumerProcess:
    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        # A clean environment: no LEADS_* from the caller's shell, and a working directory without
        # a .env file, so only what the bench sets configures the consumer.
        base = {k: v for k, v in os.environ.items() if not k.startswith("LEADS_")}
        self.env = {**base, **env, "LEADS_METRICS_PORT": str(self.port)}
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ps: Any = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ConsumerProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run"],
            env=self.env,
            cwd=self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        _LIVE.add(self.proc)
        self.ps = psutil.Process(self.proc.pid)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as response:
            return parse_metrics(response.read().decode())

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until /readyz answers 200 and partitions are assigned (the group has settled)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"consumer {self.name} exited:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    ready = r.status == 200
                if ready and self.metrics().get("leads_assigned_partitions", 0) > 0:
                    return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.2)
        raise TimeoutError(f"consumer {self.name} not ready after {timeout_s:.0f}s:\n{self.tail()}")

    def stop(self, timeout_s: float = 40.0) -> int:
        """SIGTERM (finish the batch, commit, exit 0), then SIGKILL if it overstays."""
        assert self.proc is not None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                return -9
        finally:
            _LIVE.discard(self.proc)
            if self._log is not None:
                self._log.close()
                self._log = None

    def tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@dataclass
class Sample:
    t: float  # seconds since the sampler started
    consumed: float  # leads_events_consumed_total, summed over the consumers
    rss_mb: list[float]  # per consumer
    cpu_s: dict[str, float]  # cumulative CPU seconds: "consumer" (sum), "kafka", "redis"


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
        rss: list[float] = []
        cpu: dict[str, float] = {"consumer": 0.0}
        for i, consumer in enumerate(self.consumers):
            # Not serving yet (starting) or already gone: keep the last values.
            with contextlib.suppress(OSError, urllib.error.URLError):
                self.last_metrics[i] = consumer.metrics()
            consumed += self.last_metrics[i].get("leads_events_consumed_total", 0.0)
            try:
                mb = consumer.ps.memory_info().rss / 2**20
                times = consumer.ps.cpu_times()
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
        sample = Sample(self.elapsed(), consumed, rss, cpu)
        self.samples.append(sample)
        return sample

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
