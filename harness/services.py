"""A local Kafka + Redis pair through deploy/local/services.sh (its usage header is the interface).

Each user keeps its own pair on its own ports and folder, so that faults injected into one never
disturb another: the test suite 9092/6379 in .services, the fault suite 19092/16379 in
.services-chaos, the bench 29092/26379 in .services-bench (each folder git-ignored from inside).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.process import REPO, port_answers

SCRIPT = REPO / "deploy" / "local" / "services.sh"


@dataclass
class LocalServices:
    kafka_port: int
    redis_port: int
    directory: Path
    started: list[str] = field(default_factory=list)  # what up() started, for stop_started()
    # The shape's variables (services.sh help), e.g. {"REDIS_HA": "1"}: a primary on redis_port, a
    # replica on redis_port + 1, Sentinel on REDIS_SENTINEL_PORT (redis_port + 20000 unless the
    # shape names it) watching "leadattr".
    shape: dict[str, str] = field(default_factory=dict)

    @property
    def redis_ha(self) -> bool:
        return self.shape.get("REDIS_HA") == "1"

    @property
    def sentinels(self) -> str:
        return f"127.0.0.1:{self.shape.get('REDIS_SENTINEL_PORT', self.redis_port + 20000)}"

    @classmethod
    def from_env(cls, prefix: str, kafka_port: int, redis_port: int, folder: str) -> LocalServices:
        """Ports and folder from <prefix>_KAFKA_PORT, <prefix>_REDIS_PORT, <prefix>_SERVICES_DIR."""
        return cls(
            kafka_port=int(os.environ.get(f"{prefix}_KAFKA_PORT", kafka_port)),
            redis_port=int(os.environ.get(f"{prefix}_REDIS_PORT", redis_port)),
            directory=Path(os.environ.get(f"{prefix}_SERVICES_DIR", str(REPO / folder))),
        )

    @property
    def brokers(self) -> int:
        return int(self.shape.get("KAFKA_BROKERS", "1"))

    @property
    def bootstrap(self) -> str:
        """Every node of the shape: a client started while one is down still finds the others."""
        return ",".join(f"127.0.0.1:{self.kafka_port + i}" for i in range(self.brokers))

    @property
    def redis_url(self) -> str:
        """The Redis to read and write; with REDIS_HA, the primary of the moment (as Sentinel says)."""
        return f"redis://127.0.0.1:{self.primary_port() if self.redis_ha else self.redis_port}/0"

    def primary_port(self) -> int:
        return int(self.output("redis-ha-primary").strip())

    def output(self, command: str) -> str:
        result = subprocess.run(
            ["bash", str(SCRIPT), *command.split()],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return result.stdout

    def _env(self) -> dict[str, str]:
        # The shape is this pair's own: a SECURE=1 (or other shape variable) of the caller's
        # environment must not turn the fault suite's or the bench's pair into another shape.
        inherited = {k: v for k, v in os.environ.items() if k not in ("SECURE", "KAFKA_BROKERS", "REDIS_HA")}
        return {
            **inherited,
            "SERVICES_DIR": str(self.directory),
            "KAFKA_PORT": str(self.kafka_port),
            "REDIS_PORT": str(self.redis_port),
            # The machine is small and shared: a JVM start can take half a minute.
            "SERVICES_TIMEOUT": os.environ.get("SERVICES_TIMEOUT", "120"),
            **self.shape,
        }

    def run(self, command: str, attempts: int = 3) -> float:
        """One services.sh command; returns its duration. Retries a failed call (e.g. the lock)."""
        started = time.monotonic()
        for attempt in range(attempts):
            result = subprocess.run(
                ["bash", str(SCRIPT), *command.split()],
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
            if result.returncode == 0:
                return time.monotonic() - started
            if attempt == attempts - 1:
                raise RuntimeError(
                    f"services.sh {command} failed ({result.returncode}):\n"
                    f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
                )
            time.sleep(2)
        raise AssertionError("unreachable")

    def answers(self) -> bool:
        return port_answers(self.kafka_port) and port_answers(self.redis_port)

    def owned(self) -> bool:
        """Both servers run from this folder's pid files (faults act through them)."""
        return all(name in self.pids() for name in ("kafka", "redis"))

    def up(self, require_owned: bool = False) -> None:
        """Start what does not answer (reusing what does) and remember it. ``require_owned``:
        refuse servers started elsewhere, which faults sent through this folder would miss."""
        self._seed_jars()
        if self.shape:
            if not require_owned and port_answers(self.kafka_port) and port_answers(self.redis_port):
                return  # started elsewhere (make services-up): left running
            self.run("up")
            self.started.append("all")
            return
        for name, port in (("kafka", self.kafka_port), ("redis", self.redis_port)):
            if not port_answers(port):
                self.run(f"{name}-start")
                self.started.append(name)
        if require_owned and not self.owned():
            raise RuntimeError(
                f"ports {self.kafka_port}/{self.redis_port} answer, but not for servers started from "
                f"{self.directory}: stop them, or choose other ports"
            )

    def ensure(self) -> None:
        """Whatever a fault left stopped (or frozen) is started again."""
        if self.shape:
            self.run("up")  # every node of the shape that is not running, thawed if frozen
            return
        for name, port in (("kafka", self.kafka_port), ("redis", self.redis_port)):
            if not port_answers(port):
                self.run(f"{name}-start")

    def stop_started(self) -> None:
        """Stop only what up() started."""
        for name in reversed(self.started):
            try:
                self.run("down" if name == "all" else f"{name}-stop", attempts=1)
            except (RuntimeError, subprocess.SubprocessError, OSError) as error:
                print(f"harness: could not stop {name}: {error}", flush=True)
        self.started.clear()

    def freeze_kafka(self, seconds: float) -> float:
        """SIGSTOP the broker for ``seconds``, then SIGCONT: open connections, no answers."""
        pid = (
            self.pids()["kafka"]
            if not self.shape
            else int((self._shape_dir() / "run" / "kafka.pid").read_text())
        )
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        return seconds

    def pids(self) -> dict[str, int]:
        """The pids of the servers services.sh runs from this folder (for faults and CPU time)."""
        found: dict[str, int] = {}
        for name in ("kafka", "redis"):
            try:
                pid = int((self.directory / "run" / f"{name}.pid").read_text().strip())
                os.kill(pid, 0)
            except (OSError, ValueError):
                continue
            found[name] = pid
        return found

    def _shape_dir(self) -> Path:
        return self.directory / ("redis-ha" if self.redis_ha else "")

    def _seed_jars(self) -> None:
        """Reuse the jars `make services-up` already fetched instead of a second Maven download
        (services.sh checks their stamp and fetches again if the version or pom changed)."""
        mine, theirs = self.directory / "lib", REPO / ".services" / "lib"
        if mine == theirs or (mine / ".stamp").exists() or not (theirs / ".stamp").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(theirs, mine, copy_function=os.link, dirs_exist_ok=True)
        except OSError:
            shutil.copytree(theirs, mine, dirs_exist_ok=True)
