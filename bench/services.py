"""The bench's own Kafka and Redis, through deploy/local/services.sh (its header is the interface).

Defaults keep clear of the test suite's servers: Kafka on 127.0.0.1:29092 (controller 30092) and
Redis on 127.0.0.1:26379, state in <repo>/.services-bench (ignored by git from inside). What is
already answering is reused and left alone; what the bench starts, it stops afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import redis
from confluent_kafka.admin import AdminClient

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "local" / "services.sh"
DEFAULT_KAFKA_PORT = 29092
DEFAULT_REDIS_PORT = 26379


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Services:
    kafka_port: int = DEFAULT_KAFKA_PORT
    redis_port: int = DEFAULT_REDIS_PORT
    directory: Path = REPO / ".services-bench"
    started: list[str] = field(default_factory=list)

    @classmethod
    def from_env(cls) -> Services:
        return cls(
            kafka_port=int(os.environ.get("BENCH_KAFKA_PORT", DEFAULT_KAFKA_PORT)),
            redis_port=int(os.environ.get("BENCH_REDIS_PORT", DEFAULT_REDIS_PORT)),
            directory=Path(os.environ.get("BENCH_SERVICES_DIR", REPO / ".services-bench")),
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
        }

    def _script(self, command: str, timeout_s: float = 600) -> None:
        subprocess.run(["bash", str(SCRIPT), command], env=self._env(), check=True, timeout=timeout_s)

    def kafka_ok(self) -> bool:
        if not _port_open(self.kafka_port):
            return False
        try:
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=5)
        except Exception:
            return False
        return True

    def redis_ok(self) -> bool:
        try:
            return bool(redis.Redis(port=self.redis_port, socket_timeout=3).ping())
        except redis.RedisError:
            return False

    def _seed_jars(self) -> None:
        """Reuse the jars `make services-up` already fetched instead of a second Maven download
        (services.sh checks their stamp and refetches if the version or pom changed)."""
        mine, theirs = self.directory / "lib", REPO / ".services" / "lib"
        if (mine / ".stamp").exists() or not (theirs / ".stamp").exists():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(theirs, mine, copy_function=os.link, dirs_exist_ok=True)
        except OSError:
            shutil.copytree(theirs, mine, dirs_exist_ok=True)

    def up(self) -> None:
        if not self.kafka_ok():
            self._seed_jars()
            print(f"bench: starting Kafka on {self.bootstrap} (state in {self.directory})", flush=True)
            self._script("kafka-start")
            self.started.append("kafka")
        if not self.redis_ok():
            print(f"bench: starting Redis on 127.0.0.1:{self.redis_port}", flush=True)
            self._script("redis-start")
            self.started.append("redis")

    def down(self) -> None:
        """Stop only what ``up`` started."""
        for name in reversed(self.started):
            try:
                self._script(f"{name}-stop", timeout_s=90)
            except (subprocess.SubprocessError, OSError) as error:
                print(f"bench: could not stop {name}: {error}", flush=True)
        self.started.clear()

    def pids(self) -> dict[str, int]:
        """Broker and Redis pids when services.sh runs them (for their CPU time), else none."""
        found: dict[str, int] = {}
        for name in ("kafka", "redis"):
            path = self.directory / "run" / f"{name}.pid"
            try:
                pid = int(path.read_text().strip())
                os.kill(pid, 0)
            except (OSError, ValueError):
                continue
            found[name] = pid
        return found
