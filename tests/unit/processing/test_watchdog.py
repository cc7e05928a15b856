"""Consumer lag from librdkafka statistics, for transactional commits librdkafka does not see."""

from __future__ import annotations

from typing import Any

from consumer.processing.watchdog import partition_lag


def _stats(**partitions: Any) -> dict[str, Any]:
    return {"topics": {"leads.raw": {"partitions": partitions}}}


def test_lag_is_last_stable_offset_minus_position() -> None:
    stats = _stats(
        **{
            "0": {
                "fetch_state": "active",
                "ls_offset": 120,
                "hi_offset": 125,
                "app_offset": 100,
                "consumer_lag": -1,
            },
            "1": {"fetch_state": "active", "ls_offset": 50, "app_offset": -1001, "committed_offset": 40},
            "2": {"fetch_state": "none", "ls_offset": 70, "app_offset": 0},
            "-1": {"fetch_state": "none"},
        }
    )
    assert partition_lag(stats, "leads.raw") == {"0": 20, "1": 10}


def test_empty_or_unknown_partitions() -> None:
    stats = _stats(**{"0": {"fetch_state": "active", "ls_offset": 0, "app_offset": -1001, "lo_offset": 0}})
    assert partition_lag(stats, "leads.raw") == {"0": 0}
    assert partition_lag({}, "leads.raw") == {}
