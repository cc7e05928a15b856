"""A Redis replica of the bench's Redis, for the durable phase: a batch's writes then count only once
the replica has them (LEADS_REDIS_MIN_REPLICAS=1, a WAIT behind every batch write), as in a
deployment with a primary and replicas. Started and stopped by the phase; production settings
(AOF, everysec, noeviction), its data in the bench's folder."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from harness.process import free_port


class Replica:
    def __init__(self, primary_port: int, folder: Path) -> None:
        self.primary_port = primary_port
        self.port = free_port()
        self.folder = folder / f"replica-{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 30.0) -> Replica:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder)]
        command += ["--replicaof", "127.0.0.1", str(self.primary_port), "--appendonly", "yes"]
        command += ["--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction"]
        log = (self.folder / "redis.log").open("wb")
        self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_timeout=2)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if client.info("replication").get("master_link_status") == "up":
                    return self
            except redis.RedisError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(
            f"the replica on {self.port} did not catch up with its primary in {timeout_s:.0f}s"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.folder, ignore_errors=True)
