"""Figures of a benchmark run: percentiles, summaries and rate pacing.

Pure: no clock, no I/O. Callers pass times in seconds from one monotonic clock.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The p-th percentile (0-100) of already sorted values, linearly interpolated.

    Interpolation is monotonic in p, so p50 <= p95 <= p99 always holds.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= p <= 100:
        raise ValueError(f"percentile {p} is not in [0, 100]")
    rank = (len(sorted_values) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    frac = rank - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * frac


def latency_summary(latencies_ms: Iterable[float]) -> dict[str, float | int | None]:
    """count, mean, p50, p95, p99 and max of latencies in milliseconds (None when empty)."""
    values = sorted(latencies_ms)
    if not values:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None, "max": None}
    return {
        "count": len(values),
        "mean": sum(values) / len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": values[-1],
    }


def due_time(start_s: float, index: int, rate: float) -> float:
    """When message number `index` (0-based) is due at `rate` per second; 0 means now.

    Pacing against the start, not the previous message, catches up after a slow
    moment instead of lowering the rate for the rest of the run.
    """
    if rate < 0:
        raise ValueError("rate must be >= 0")
    return start_s if rate == 0 else start_s + index / rate


def due_count(start_s: float, now_s: float, rate: float, total: int) -> int:
    """How many of `total` messages are due by `now_s` at `rate` per second (0: all)."""
    if rate == 0:
        return total
    if now_s < start_s:
        return 0
    return min(total, math.floor((now_s - start_s) * rate) + 1)


def throughput(count: int, first_s: float | None, last_s: float | None) -> float:
    """Events per second between the first and the last event (0 when undefined)."""
    if count <= 0 or first_s is None or last_s is None or last_s <= first_s:
        return 0.0
    return count / (last_s - first_s)


@dataclass(frozen=True)
class Matched:
    """Produce and consume times of ids, matched: what one run measured."""

    latencies_ms: list[float]  # per matched id, in produce order
    matched: int
    unmatched: int
    first_produce_s: float | None
    last_consume_s: float | None


def match_times(produced: Mapping[str, float], consumed: Mapping[str, float]) -> Matched:
    """Pair each produced id with its first consume time."""
    latencies = []
    last = None
    for key, t_produce in produced.items():
        t_consume = consumed.get(key)
        if t_consume is None:
            continue
        latencies.append((t_consume - t_produce) * 1000.0)
        last = t_consume if last is None else max(last, t_consume)
    first = min(produced.values()) if produced else None
    return Matched(latencies, len(latencies), len(produced) - len(latencies), first, last)


def cpu_seconds(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """CPU seconds used per process between two readings of cumulative CPU time."""
    return {name: after[name] - before[name] for name in after if name in before}


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if not numerator or not denominator:
        return None
    return numerator / denominator


def hop_latencies(
    stamps: Mapping[str, Mapping[str, float]],
    hops: Sequence[tuple[str, str, str]],
    ids: Iterable[str],
) -> dict[str, dict[str, float | int | None]]:
    """Per hop (name, from topic, to topic): the time between a transaction's message on
    one topic and on the next, from the messages' timestamps (ms), over ``ids``."""
    wanted = list(ids)
    out = {}
    for name, source, sink in hops:
        a, b = stamps.get(source, {}), stamps.get(sink, {})
        out[name] = latency_summary(b[i] - a[i] for i in wanted if i in a and i in b)
    return out


def named_missing_in_time(
    named: Mapping[str, tuple[Sequence[str], float]],
    answered: Mapping[str, Mapping[str, float]],
    deadline_ms: float,
) -> int:
    """How many decisions named an agent missing that had answered by the deadline.

    ``named``: transaction id -> (the agents its decision named missing, its
    request's time in ms); ``answered``: agent -> transaction id -> the
    timestamp (ms) of the agent's answer. An answer counts as in time when it
    was stamped before the request's time plus ``deadline_ms``.
    """
    return sum(
        any(
            answered.get(agent, {}).get(tx_id, math.inf) < requested_ms + deadline_ms
            for agent in agents
        )
        for tx_id, (agents, requested_ms) in named.items()
    )
