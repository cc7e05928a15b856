"""Small numeric helpers: percentiles, the middle-80 % rate, Prometheus histogram quantiles."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); values must be sorted."""
    if not sorted_values:
        return math.nan
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


def crossing_time(times: Sequence[float], counts: Sequence[float], level: float) -> float | None:
    """When a non-decreasing counter sampled at ``times`` first reached ``level`` (interpolated)."""
    for i, count in enumerate(counts):
        if count >= level:
            if i == 0 or counts[i - 1] == count:
                return times[i]
            t0, c0 = times[i - 1], counts[i - 1]
            return t0 + (times[i] - t0) * (level - c0) / (count - c0)
    return None


def middle_rate(
    times: Sequence[float], counts: Sequence[float], total: float, low: float = 0.1, high: float = 0.9
) -> tuple[float, float, float] | None:
    """Events/s between the moments ``low`` and ``high`` of ``total`` were done: (rate, t_low, t_high).

    This leaves out start-up (process start, group join, first fetches) and the tail (the last
    partitions draining alone), which are not the sustained rate.
    """
    t_low = crossing_time(times, counts, low * total)
    t_high = crossing_time(times, counts, high * total)
    if t_low is None or t_high is None or t_high <= t_low:
        return None
    return (high - low) * total / (t_high - t_low), t_low, t_high


def histogram_quantile(q: float, buckets: Sequence[tuple[float, float]]) -> float:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets, +Inf last."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    previous_bound, previous_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return previous_bound
            if count == previous_count:
                return bound
            return previous_bound + (bound - previous_bound) * (rank - previous_count) / (
                count - previous_count
            )
        previous_bound, previous_count = bound, count
    return previous_bound
