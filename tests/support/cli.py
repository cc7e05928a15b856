"""`leadattr <command>` as an operator runs it, for the integration tests: this interpreter, the
repository as working directory, the caller's environment with the suite's broker and Redis, then
``env``."""

from __future__ import annotations

import os
import subprocess
import sys

from harness.kafka import BOOTSTRAP, REDIS_URL
from harness.process import REPO


def leadattr(
    args: list[str], env: dict[str, str], stdin: str | None = None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumer.cli", *args],
        env={**os.environ, "LEADS_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP, "LEADS_REDIS_URL": REDIS_URL, **env},
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout_s,
        check=False,
    )
