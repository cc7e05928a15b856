"""Run the real consumer (`python -m consumer.cli run`) as a child process, as production does."""

from __future__ import annotations

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

REPO = Path(__file__).resolve().parents[2]


def port_answers(port: int) -> bool:
    """Something listens on 127.0.0.1:port (a server of ours, started or not by this run)."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ConsumerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.port = int(env.get("LEADS_METRICS_PORT") or free_port())
        self.env = {**os.environ, **env, "LEADS_METRICS_PORT": str(self.port)}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self, wait_ready: bool = True) -> ConsumerProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "consumer.cli", "run"],
            env=self.env,
            cwd=REPO,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if wait_ready:
            self.wait_ready()
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as response:  # noqa: S310 - loopback
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as error:
            return int(error.code), error.read().decode()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"consumer exited with {self.proc.returncode}:\n{self.logs()[-3000:]}")
            try:
                if self.get("/readyz")[0] == 200 and self.metric("leads_assigned_partitions") > 0:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"consumer not ready after {timeout_s}s:\n{self.logs()[-3000:]}")

    def metrics_text(self) -> str:
        return self.get("/metrics")[1]

    def metric(self, name: str, labels: str = "") -> float:
        """Value of one sample, e.g. metric("leads_attributed_total", 'mode="direct"')."""
        wanted = f"{name}{{{labels}}}" if labels else name
        for line in self.metrics_text().splitlines():
            if line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            if key == wanted:
                return float(value)
        return 0.0

    def stop(self, timeout_s: float = 40.0) -> int:
        """SIGTERM, as Kubernetes does; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self._close_log()

    def kill(self) -> None:
        """SIGKILL: a crash, no clean-up at all."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
