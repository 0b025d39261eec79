"""Per-group statistics of the kernel's records (count, mean, min, max, median, p95, p99 of the
latencies per endpoint or service; per endpoint also its failures and its requests within SLO;
the aggregated mean and p99), jitted so that a report costs little beside a run.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, inline="always")
def _gather_groups(keys, values, n_groups):
    """``values`` gathered by group (keys in 0..n_groups-1) with a counting scatter:
    (offsets, grouped), group g's values being ``grouped[offsets[g]:offsets[g + 1]]`` in their
    original order."""
    counts = np.zeros(n_groups + 1, np.int64)
    for i in range(keys.shape[0]):
        counts[keys[i] + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:n_groups].copy()
    grouped = np.empty(keys.shape[0], np.float64)
    for i in range(keys.shape[0]):
        g = keys[i]
        grouped[fill[g]] = values[i]
        fill[g] += 1
    return offsets, grouped


@njit(cache=True)
def group_stats(keys, values, n_groups):
    """Per group: count, mean, min, max, median, p95, p99 of ``values`` (NaN when empty).

    Percentiles are the nearest-rank values of the sorted group (what Locust's response-time
    buckets approximate). Groups are gathered with a counting scatter, then each is sorted.
    """
    out = np.full((n_groups, 7), np.nan)
    offsets, grouped = _gather_groups(keys, values, n_groups)
    for g in range(n_groups):
        cnt = offsets[g + 1] - offsets[g]
        out[g, 0] = cnt
        if cnt == 0:
            continue
        vals = np.sort(grouped[offsets[g]:offsets[g + 1]])
        out[g, 1] = vals.mean()
        out[g, 2] = vals[0]
        out[g, 3] = vals[cnt - 1]
        out[g, 4] = vals[min(cnt - 1, int(np.ceil(0.50 * cnt)) - 1)]
        out[g, 5] = vals[min(cnt - 1, int(np.ceil(0.95 * cnt)) - 1)]
        out[g, 6] = vals[min(cnt - 1, int(np.ceil(0.99 * cnt)) - 1)]
    return out


@njit(cache=True)
def group_p99(keys, values, n_groups):
    """Per group: (count, p99) of ``values`` (p99 NaN when empty), by selection, not sorting."""
    out = np.full((n_groups, 2), np.nan)
    offsets, grouped = _gather_groups(keys, values, n_groups)
    for g in range(n_groups):
        cnt = offsets[g + 1] - offsets[g]
        out[g, 0] = cnt
        if cnt == 0:
            continue
        k = min(cnt - 1, int(np.ceil(0.99 * cnt)) - 1)
        out[g, 1] = np.partition(grouped[offsets[g]:offsets[g + 1]], k)[k]
    return out


@njit(cache=True)
def endpoint_stats(keys, values, failed, slo_ms, n_groups):
    """Locust's view of the records: per endpoint (key) the :func:`group_stats` columns, then
    its failures and its requests within SLO (not failed, latency <= ``slo_ms[key]``); and over
    all records their mean and nearest-rank p99 (NaN when there is none).

    Returns (per-endpoint array (n_groups, 9), aggregated mean, aggregated p99).
    """
    out = np.full((n_groups, 9), np.nan)
    out[:, :7] = group_stats(keys, values, n_groups)
    out[:, 7:] = 0.0
    for i in range(keys.shape[0]):
        g = keys[i]
        if failed[i]:
            out[g, 7] += 1.0
        elif values[i] <= slo_ms[g]:
            out[g, 8] += 1.0
    cnt = values.shape[0]
    if cnt == 0:
        return out, np.nan, np.nan
    k = min(cnt - 1, int(np.ceil(0.99 * cnt)) - 1)
    return out, values.mean(), np.partition(values, k)[k]
