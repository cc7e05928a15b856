"""The suite's own Kafka + Redis pair (deploy/local/services.sh with its own ports and folder).

Faults are injected into this pair only, so restarting it never disturbs other work on the
machine: ports CHAOS_KAFKA_PORT (19092) and CHAOS_REDIS_PORT (16379), state in
<repo>/.services-chaos (SERVICES_DIR; services.sh git-ignores the folder from inside).
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.process import REPO, port_answers

SCRIPT = REPO / "deploy" / "local" / "services.sh"


@dataclass
class ChaosServices:
    kafka_port: int
    redis_port: int
    directory: Path
    started_here: bool = False

    @classmethod
    def from_env(cls) -> ChaosServices:
        return cls(
            kafka_port=int(os.environ.get("CHAOS_KAFKA_PORT", "19092")),
            redis_port=int(os.environ.get("CHAOS_REDIS_PORT", "16379")),
            directory=Path(os.environ.get("CHAOS_SERVICES_DIR", str(REPO / ".services-chaos"))),
        )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            "SERVICES_DIR": str(self.directory),
            "KAFKA_PORT": str(self.kafka_port),
            "REDIS_PORT": str(self.redis_port),
            # The box is small and shared: a JVM start can take half a minute.
            "SERVICES_TIMEOUT": os.environ.get("SERVICES_TIMEOUT", "120"),
        }

    def run(self, command: str, attempts: int = 3) -> float:
        """Run one services.sh command; returns its duration. Retries a failed call (e.g. the lock)."""
        started = time.monotonic()
        for attempt in range(attempts):
            result = subprocess.run(
                ["bash", str(SCRIPT), command],
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if result.returncode == 0:
                return time.monotonic() - started
            if attempt == attempts - 1:
                raise RuntimeError(
                    f"services.sh {command} failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
                )
            time.sleep(2)
        raise AssertionError("unreachable")

    def answers(self) -> bool:
        return port_answers(self.kafka_port) and port_answers(self.redis_port)

    def up(self) -> None:
        """Start the pair unless both answer already; remember whether we started it."""
        if not self.answers():
            self.run("up")
            self.started_here = True
        elif not self._owned():
            # Faults act through this folder's pid files: against servers started elsewhere (another
            # checkout's chaos run) they would do nothing, and the run would report false violations.
            raise RuntimeError(
                f"ports {self.kafka_port}/{self.redis_port} answer, but not for servers started from "
                f"{self.directory}: stop them, or choose other CHAOS_KAFKA_PORT/CHAOS_REDIS_PORT"
            )

    def _owned(self) -> bool:
        for name in ("kafka.pid", "redis.pid"):
            try:
                pid = int((self.directory / "run" / name).read_text().strip())
            except (OSError, ValueError):
                return False
            if not Path(f"/proc/{pid}").exists():
                return False
        return True

    def ensure(self) -> None:
        """Before a scenario: whatever an earlier scenario left stopped is started again."""
        if not port_answers(self.kafka_port):
            self.run("kafka-start")
        if not port_answers(self.redis_port):
            self.run("redis-start")

    def freeze_kafka(self, seconds: float) -> float:
        """SIGSTOP the broker for ``seconds``, then SIGCONT: open connections, no answers."""
        pid = int((self.directory / "run" / "kafka.pid").read_text().strip())
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(seconds)
        finally:
            os.kill(pid, signal.SIGCONT)
        return seconds

    def down(self) -> None:
        self.run("down")


_shared: ChaosServices | None = None


def shared() -> ChaosServices:
    """One pair for the whole pytest process: started on first use when it does not answer, and
    then stopped when the process exits (so several test modules share one start)."""
    global _shared  # noqa: PLW0603 - a process-wide singleton on purpose
    if _shared is None:
        _shared = ChaosServices.from_env()
        _shared.up()
        if _shared.started_here:
            atexit.register(_shared.down)
    return _shared
