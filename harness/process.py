"""The real consumer (`python -m consumer.cli run`) as a child process, as production runs it."""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[1]

_LIVE: set[subprocess.Popen[bytes]] = set()


def _kill_leftovers() -> None:
    """Never leave a consumer behind, whatever way the caller exits."""
    for proc in list(_LIVE):
        if proc.poll() is None:
            proc.kill()


atexit.register(_kill_leftovers)


def port_answers(port: int) -> bool:
    """Something listens on 127.0.0.1:port (a server of ours, started or not by this run)."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


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


class ConsumerProcess:
    """One consumer. ``clean``: no LEADS_* setting of the caller's environment leaks in, and it
    runs in ``workdir`` (no .env file there), so only ``env`` configures it."""

    def __init__(
        self, env: dict[str, str], log_path: Path, workdir: Path = REPO, clean: bool = False
    ) -> None:
        self.port = int(env.get("LEADS_METRICS_PORT") or free_port())
        base = {k: v for k, v in os.environ.items() if not (clean and k.startswith("LEADS_"))}
        self.env = {**base, **env, "LEADS_METRICS_PORT": str(self.port)}
        self.log_path = log_path
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, wait_ready: bool = True) -> ConsumerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run"],
            env=self.env,
            cwd=self.workdir,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        _LIVE.add(self.proc)
        if wait_ready:
            self.wait_ready()
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout_s: float = 5.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=timeout_s) as response:  # noqa: S310 - loopback
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until /readyz answers 200 and partitions are assigned (the group has settled)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.proc.returncode if self.proc is not None else None
                raise RuntimeError(f"consumer exited with {code}:\n{self.logs()[-3000:]}")
            try:
                if self.get("/readyz", 2)[0] == 200 and self.metric("leads_assigned_partitions") > 0:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"consumer not ready after {timeout_s:.0f}s:\n{self.logs()[-3000:]}")

    def metrics_text(self) -> str:
        return self.get("/metrics", 2)[1]

    def metrics(self) -> dict[str, float]:
        return parse_metrics(self.metrics_text())

    def metric(self, name: str, labels: str = "") -> float:
        """Value of one sample, e.g. metric("leads_attributed_total", 'mode="direct"'); 0 if absent."""
        return self.metrics().get(f"{name}{{{labels}}}" if labels else name, 0.0)

    def wait_metric(self, name: str, value: float, labels: str = "", timeout_s: float = 15.0) -> float:
        """Poll one sample until it equals value (gauges refresh on their own timers); returns the
        last value read, so the caller's assert shows what it was when the time ran out."""
        deadline = time.monotonic() + timeout_s
        current = self.metric(name, labels)
        while current != value and time.monotonic() < deadline:
            time.sleep(0.25)
            current = self.metric(name, labels)
        return current

    def stop(self, timeout_s: float = 40.0) -> int:
        """SIGTERM, as Kubernetes does; returns the exit code (-9 when it had to be killed)."""
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
            self._closed()

    def kill(self) -> None:
        """SIGKILL: a crash, no clean-up at all."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._closed()

    def _closed(self) -> None:
        if self.proc is not None:
            _LIVE.discard(self.proc)
        if self._log is not None:
            self._log.close()
            self._log = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
