"""``python -m bench.restart [--runs N]``: restart-to-first-committed-batch after a kill -9, with
dynamic membership and with a static one (LEADS_INSTANCE_ID), on the local Kafka and Redis
(`make services-up`, 9092 / 6379).

Each run: a consumer attributes a first lead (its group is settled, its transaction used), is
killed with SIGKILL while a batch's transaction is open, and is started again at once with the
same settings, as Kubernetes restarts a crashed pod under the same name. The figure is the time from
that start to the attributed record of a lead produced right after it, read_committed. librdkafka's
default session timeout (45 s) and the broker's default transaction timeout (60 s) apply: the ones a
deployment has unless it changes them.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.kafka import BOOTSTRAP, REDIS_URL, Topics, create_topics, lead, produce, read_topic
from harness.process import ConsumerProcess


def one_restart(static: bool, folder: Path) -> float:
    topics = Topics.fresh("r")
    create_topics(topics.all(), configs=topics.configs())
    env = {
        **topics.env(),
        "LEADS_KAFKA_BOOTSTRAP_SERVERS": BOOTSTRAP,
        "LEADS_REDIS_URL": REDIS_URL,
        "LEADS_BATCH_WAIT_MS": "50",
        **({"LEADS_INSTANCE_ID": "lead-attribution-0"} if static else {}),
    }
    first = ConsumerProcess(env, folder / f"{topics.name}-first.log", clean=True).start()
    produce(topics.input, [lead("restart-0", "signup", clickId="click-0")])
    read_topic(topics.attributed, expected=1, idle_s=0.1)
    # A stream in flight: the kill lands with a transaction open.
    produce(topics.input, [lead(f"restart-a{i}", "signup", clickId=f"a{i}") for i in range(2000)])
    time.sleep(0.3)
    assert first.proc is not None
    os.kill(first.proc.pid, signal.SIGKILL)
    first.proc.wait()
    started = time.monotonic()
    second = ConsumerProcess(env, folder / f"{topics.name}-second.log", clean=True).start(wait_ready=False)
    produce(topics.input, [lead("restart-1", "signup", clickId="click-1")])
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        records = read_topic(topics.attributed, timeout_s=1, idle_s=0.1)
        if any(r["customerExternalId"] == "restart-1" for r in records):
            elapsed = time.monotonic() - started
            second.stop()
            return elapsed
    second.kill()
    raise TimeoutError("the restarted consumer committed nothing within 180 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart", description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        for static in (False, True):
            name = "static (LEADS_INSTANCE_ID)" if static else "dynamic"
            times = [one_restart(static, Path(folder)) for _ in range(args.runs)]
            print(
                f"restart to first committed batch, {name}: median {statistics.median(times):.1f} s "
                f"({', '.join(f'{t:.1f}' for t in times)})",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
