"""`make run`: the whole product on this machine in about a minute.

Starts local Kafka and Redis (unless already running), the consumer with short windows, sends
deploy/local/sample-leads.jsonl with `leadattr send`, prints what came out, stops what it started.
The consumer's own log goes to a file whose path is printed: the terminal shows only the demo.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from harness.kafka import KAFKA_PORT, REDIS_PORT, Topics, create_topics, read_topic  # noqa: E402
from harness.services import LocalServices  # noqa: E402

SAMPLES = REPO / "deploy" / "local" / "sample-leads.jsonl"
LOGS = REPO / ".services" / "logs"
PENDING_TTL_S = 8  # short, so the demo also shows a lead that expires unverified


def table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    print(f"\n{title} ({len(rows)})")
    if not rows:
        return
    cells = [[str(r.get(c) if r.get(c) is not None else "-") for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  " + "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    print("  " + "  ".join("-" * w for w in widths))
    for row in cells:
        print("  " + "  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def main() -> int:
    services = LocalServices(KAFKA_PORT, REDIS_PORT, REPO / ".services")
    if not services.answers():
        print(
            f"== starting local Kafka (KRaft) on 127.0.0.1:{KAFKA_PORT} and Redis on 127.0.0.1:{REDIS_PORT}"
        )
    services.up()
    run_id = uuid.uuid4().hex[:6]
    topics = Topics(f"demo-{run_id}", f"demo-{run_id}", f"demo-{run_id}")
    env = {
        **os.environ,
        "LEADS_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{KAFKA_PORT}",
        "LEADS_REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0",
        **topics.env(),
        "LEADS_PENDING_TTL_SECONDS": str(PENDING_TTL_S),
        "LEADS_ORPHAN_GRACE_SECONDS": "5",
        "LEADS_METRICS_PORT": "0",
        "LEADS_LOG_LEVEL": "INFO",
    }
    create_topics(topics.all(), bootstrap=env["LEADS_KAFKA_BOOTSTRAP_SERVERS"], configs=topics.configs())
    leadattr = str(Path(sys.executable).with_name("leadattr"))
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"demo-{run_id}.log"
    log = log_path.open("ab")
    print(f"== consumer: {leadattr} run   (topics demo-{run_id}.*, pending TTL {PENDING_TTL_S}s)")
    print(f"   its log: {log_path.relative_to(REPO)}")
    consumer = subprocess.Popen([leadattr, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    code = 1
    try:
        print(f"== sending {SAMPLES.relative_to(REPO)} with `leadattr send --file`")
        sent = subprocess.run(
            [leadattr, "send", "--file", str(SAMPLES)], env=env, check=True, capture_output=True, text=True
        )
        log.write(sent.stderr.encode())
        print(f"   {sent.stderr.strip().splitlines()[-1]}")
        print(f"== waiting {PENDING_TTL_S + 4}s so the unverified lead expires ...")
        time.sleep(PENDING_TTL_S + 4)
        bootstrap = env["LEADS_KAFKA_BOOTSTRAP_SERVERS"]
        attributed = read_topic(env["LEADS_ATTRIBUTED_TOPIC"], expected=3, timeout_s=20, bootstrap=bootstrap)
        unlinked = read_topic(env["LEADS_UNLINKED_TOPIC"], expected=1, timeout_s=10, bootstrap=bootstrap)
        dead = read_topic(env["LEADS_DEAD_LETTER_TOPIC"], expected=1, timeout_s=10, bootstrap=bootstrap)
        table(
            "Attributed leads (leads.attributed)",
            attributed,
            ["customerExternalId", "mode", "clickId", "eventName", "verificationEventName", "customerName"],
        )
        table(
            "Unlinked leads (leads.unlinked)",
            unlinked,
            ["customerExternalId", "reason", "clickId", "eventName"],
        )
        table(
            "Dead letters (leads.dead-letter)", dead, ["reason", "detail", "sourcePartition", "sourceOffset"]
        )
        code = 0 if (len(attributed), len(unlinked), len(dead)) == (3, 1, 1) else 1
        if code:
            print(f"\nunexpected result: see the consumer's log, {log_path}", file=sys.stderr)
    finally:
        consumer.send_signal(signal.SIGTERM)
        consumer.wait(40)
        log.close()
        print(f"\n== consumer stopped (exit {consumer.returncode})")
        services.stop_started()
    return code or consumer.returncode


if __name__ == "__main__":
    sys.exit(main())
