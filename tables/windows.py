"""Exact event-time sliding windows for the velocity agent: per account here,
per merchant in tables/merchant_windows.py.

Each account keeps the raw events of its last 24 hours of event time (up to
``max_events``), sorted, and window values are computed from them on demand. Raw
events rather than buckets because the windows slide exactly: a window W at time
t covers events with ``t - W < event_time <= t``, so a burst straddling a bucket
edge is never split in two.

Everything runs in event time: eviction follows the highest event time seen for
the key (its watermark), never the wall clock, so replaying history gives the
same answers as the live run.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass
from typing import Any

ACCOUNT_WINDOWS_MS: dict[str, int] = {
    "1m": 60_000,
    "10m": 600_000,
    "1h": 3_600_000,
    "24h": 86_400_000,
}
MERCHANT_WINDOWS_MS: dict[str, int] = {
    "1h": 3_600_000,
    "24h": 86_400_000,
}
# Nothing older than the widest window can ever be counted again.
HORIZON_MS = max(*ACCOUNT_WINDOWS_MS.values(), *MERCHANT_WINDOWS_MS.values())


def _time(event: tuple) -> int:
    return event[0]


@dataclass(slots=True)
class AccountVelocity:
    # (event_time_ms, transaction_id, amount, merchant_id), sorted by time then id.
    events: list[tuple[int, str, float, str]]
    max_time_ms: int  # the watermark of this key
    late_events: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "events": [list(e) for e in self.events],
            "max_time_ms": self.max_time_ms,
            "late_events": self.late_events,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AccountVelocity:
        # Back to tuples: sorted insertion compares events, and lists of mixed
        # kinds would not compare the same way.
        return cls(
            events=[(int(t), str(i), float(a), str(m)) for t, i, a, m in d["events"]],
            max_time_ms=int(d["max_time_ms"]),
            late_events=int(d.get("late_events", 0)),
        )


@dataclass(frozen=True, slots=True)
class Applied:
    state: AccountVelocity
    duplicate: bool  # the transaction was already counted; state is the input, unchanged
    late: bool  # older than the watermark minus the allowed lateness (still counted if in 24h)


def apply_account_event(
    state: AccountVelocity | None,
    *,
    time_ms: int,
    transaction_id: str,
    amount: float,
    merchant_id: str,
    max_events: int,
    allowed_lateness_ms: int,
) -> Applied:
    """Add one transaction to an account's window state; the input is never mutated."""
    if state is None:
        state = AccountVelocity(events=[], max_time_ms=time_ms, late_events=0)
    elif _seen(state.events, transaction_id):
        return Applied(state, duplicate=True, late=False)
    events, max_time_ms, late = _insert(
        state.events,
        state.max_time_ms,
        (time_ms, transaction_id, float(amount), merchant_id),
        max_events,
        allowed_lateness_ms,
    )
    return Applied(
        AccountVelocity(events, max_time_ms, state.late_events + int(late)),
        duplicate=False,
        late=late,
    )


def _seen(events: list[tuple], transaction_id: str) -> bool:
    # A linear scan: a redelivery may carry any event time, and the list is bounded.
    return any(e[1] == transaction_id for e in events)


def _insert(
    events: list[tuple],
    max_time_ms: int,
    event: tuple,
    max_events: int,
    allowed_lateness_ms: int,
) -> tuple[list[tuple], int, bool]:
    time_ms = event[0]
    late = time_ms < max_time_ms - allowed_lateness_ms
    max_time_ms = max(max_time_ms, time_ms)
    events = events.copy()
    # Transaction ids are unique in the list, so tuple order never compares payloads.
    insort(events, event)
    # Evict by event time first, then cap the count so one hot key stays bounded.
    start = bisect_right(events, max_time_ms - HORIZON_MS, key=_time)
    start = max(start, len(events) - max_events)
    if start:
        del events[:start]
    return events, max_time_ms, late


def account_windows(state: AccountVelocity, as_of_ms: int) -> dict[str, dict[str, Any]]:
    """Count, sum, max and distinct merchants per window ending at ``as_of_ms``.

    Events after ``as_of_ms`` are not counted, so asking as of an out-of-order
    transaction's own time describes the account as it was then.
    """
    events = state.events
    i = bisect_right(events, as_of_ms, key=_time)
    count, total, biggest = 0, 0.0, 0.0
    merchants: set[str] = set()
    out: dict[str, dict[str, Any]] = {}
    # Windows are nested, so one backwards walk from as_of fills them all.
    for name, window_ms in sorted(ACCOUNT_WINDOWS_MS.items(), key=lambda kv: kv[1]):
        start_ms = as_of_ms - window_ms
        while i > 0 and events[i - 1][0] > start_ms:
            i -= 1
            _, _, amount, merchant_id = events[i]
            count += 1
            total += amount
            biggest = max(biggest, amount)
            merchants.add(merchant_id)
        out[name] = {
            "count": count,
            "sum": round(total, 2),
            "max": biggest,
            "distinct_merchants": len(merchants),
        }
    return {name: out[name] for name in ACCOUNT_WINDOWS_MS}
