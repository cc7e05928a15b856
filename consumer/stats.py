"""Consumer lag from librdkafka's statistics JSON (statistics.interval.ms).

librdkafka's own ``consumer_lag`` is computed from the offsets *it* committed; ours are committed by
the transactional producer (send_offsets_to_transaction), so it stays -1. We therefore measure lag
as the last stable offset (what a read_committed consumer can reach) minus our fetch position.
"""

from __future__ import annotations

from typing import Any


def partition_lag(stats: dict[str, Any], topic: str) -> dict[str, int]:
    """Records behind, per assigned partition of ``topic``; partitions we do not fetch are left out."""
    lag: dict[str, int] = {}
    for partition, values in stats.get("topics", {}).get(topic, {}).get("partitions", {}).items():
        if partition == "-1" or values.get("fetch_state") != "active":
            continue
        end = values.get("ls_offset", -1)
        if end < 0:
            end = values.get("hi_offset", -1)
        if end < 0:
            continue
        position = next(
            (values[k] for k in ("app_offset", "committed_offset", "lo_offset") if values.get(k, -1) >= 0), 0
        )
        lag[partition] = max(0, end - position)
    return lag
