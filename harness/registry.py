"""The local schema registry (Apicurio, Confluent API) through deploy/local/registry.sh: started
when it does not answer, its clients' settings read from the registry.env it writes."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.process import REPO

SCRIPT = REPO / "deploy" / "local" / "registry.sh"


@dataclass
class LocalRegistry:
    directory: Path  # the SERVICES_DIR it keeps its files in
    port: int = int(os.environ.get("REGISTRY_PORT", "8081"))
    started: bool = False

    def _run(self, command: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SERVICES_DIR": str(self.directory), "REGISTRY_PORT": str(self.port)}
        return subprocess.run(
            ["bash", str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=600, check=False
        )

    def up(self) -> LocalRegistry:
        if self._run("status").returncode != 0:
            result = self._run("up")
            if result.returncode != 0:
                raise RuntimeError(f"registry.sh up failed:\n{result.stdout}\n{result.stderr}")
            self.started = True
        return self

    def stop_started(self) -> None:
        if self.started:
            self._run("down")

    def settings(self) -> dict[str, str]:
        """registry.env: LEADS_SCHEMA_REGISTRY_URL, ..._BASIC_AUTH_USER_INFO (user leadattr),
        REGISTRY_BASE_URL and REGISTRY_<USER>_USER_INFO for admin, producer and reader."""
        values: dict[str, str] = {}
        for line in (self.directory / "registry.env").read_text().splitlines():
            if line and not line.startswith("#") and "=" in line:
                name, value = line.split("=", 1)
                values[name] = value
        return values

    @property
    def url(self) -> str:
        return self.settings()["LEADS_SCHEMA_REGISTRY_URL"]

    def user_info(self, user: str) -> str:
        return self.settings()[f"REGISTRY_{user.upper()}_USER_INFO"]
