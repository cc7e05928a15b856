"""Optional py-spy sampling of the consumer process (`python -m bench --profile`), summarised as
the share of samples spent in each function (inclusive and self), grouped into the pipeline's
stages. py-spy is not a dependency: `.venv/bin/pip install py-spy` first."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r":\d+\)$")

# Stage -> substrings of frames that belong to it (first match from the leaf upwards wins).
# Modules compiled by mypyc (setup.py) show as C frames, CPyDef_<module>___<function>, when sampled
# with --native.
STAGES: dict[str, tuple[str, ...]] = {
    "avro encode (state, journal, outputs)": ("encode (consumer/avro/codec.py)", "CPyDef_wire___"),
    "avro decode (input, state, journal)": ("decode (consumer/avro/codec.py)",),
    "validate": ("validate (consumer/rules/validate.py)", "CPyDef_validate___validate"),
    "redis client (pack, send, parse)": ("redis/",),
    "kafka produce": ("_produce (consumer/delivery/committer.py)",),
    "kafka commit / transaction": ("commit_batch (consumer/delivery/committer.py)",),
    "kafka consume": ("Runner._sources",),
    "attribution rules": ("attribute (consumer/rules/attribute.py)", "CPyDef_attribute___attribute"),
    "state transition (plan_write)": (
        "plan_write (consumer/state/transition.py)",
        "CPyDef_transition___plan_write",
    ),
    "garbage collector": ("gc_collect",),
    "metrics": ("prometheus_client", "Runner._record"),
}


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return found if Path(found).exists() else None


def record(pid: int, output: Path, idle: bool = False, rate: int = 100) -> subprocess.Popen[bytes] | None:
    """Sample ``pid`` until it exits; None when py-spy is not installed."""
    exe = py_spy()
    if exe is None:
        return None
    command = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw", "-o", str(output)]
    # C frames too: the compiled per-event modules and the garbage collector are C code.
    command.append("--native")
    if idle:
        command.append("--idle")
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _line_stages() -> dict[str, str]:
    """Frames of C calls (librdkafka) show as the calling Python line: map those lines to stages."""
    import consumer  # noqa: PLC0415

    root = Path(consumer.__file__).parent
    wanted = {
        "runner.py": {".consume(": "kafka consume"},
        "commit.py": {
            "commit_transaction(": "kafka commit / transaction",
            "send_offsets_to_transaction(": "kafka commit / transaction",
            "begin_transaction(": "kafka commit / transaction",
            ".flush(": "kafka commit / transaction",
            "consumer.commit(": "kafka commit / transaction",
            "producer.produce(": "kafka produce",
            "producer.poll(": "kafka produce",
        },
    }
    found: dict[str, str] = {}
    for name, needles in wanted.items():
        try:
            lines = (root / name).read_text().splitlines()
        except OSError:
            continue
        for number, text in enumerate(lines, start=1):
            for needle, stage in needles.items():
                if needle in text:
                    found[f"(consumer/{name}:{number})"] = stage
    return found


def summarise(path: Path, top: int = 25) -> dict[str, Any]:
    """Shares of the run loop's thread (stacks under consumer.cli main). Other threads (the
    /metrics server, watchdogs) mostly wait; py-spy's idle detection does not always see that in
    a VM, so they are reported apart instead of diluting the stages."""
    by_line = _line_stages()
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    stages: Counter[str] = Counter()
    total = other_threads = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        if "(consumer/cli.py" not in stack:
            other_threads += n
            continue
        total += n
        raw = stack.split(";")
        frames = [_LINE.sub(")", f) for f in raw]
        for frame in set(frames):
            inclusive[frame] += n
        leaf[frames[-1]] += n
        stages[_stage(raw, frames, by_line)] += n
    if not total:
        return {"samples": 0}

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "other_thread_samples": other_threads,
        "stages": share(stages),
        "inclusive": share(inclusive),
        "self": share(leaf),
    }


def _stage(raw: list[str], frames: list[str], by_line: dict[str, str]) -> str:
    leaf = raw[-1]
    for suffix, stage in by_line.items():
        if leaf.endswith(suffix):
            return stage
    for frame in reversed(frames):
        for stage, needles in STAGES.items():
            if any(needle in frame for needle in needles):
                return stage
    return "other (run loop, dataclasses, lead ids, ...)"
