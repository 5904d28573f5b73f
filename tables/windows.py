"""Exact event-time sliding windows for the velocity agent: per account here,
per merchant in tables/merchant_windows.py.

Each key keeps the raw events of its last 24 hours of event time (up to
``max_events``), sorted, and window values are computed from them on demand.
Raw events rather than buckets because the windows slide exactly: a window W at
time t covers events with ``t - W < event_time <= t``, so a burst straddling a
bucket edge is never split in two. How the events are kept and stored (parsed
between transactions, a table row per hour) is in tables/hourly.py.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Any

from tables.hourly import HourlyEvents, event_time

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
# (event_time_ms, transaction_id, amount, merchant_id), sorted by time then id.
AccountEvent = tuple[int, str, float, str]


class AccountWindow(HourlyEvents):
    """One account's events of the last 24 h of its event time."""

    __slots__ = ()

    @staticmethod
    def row_event(row: list) -> AccountEvent:
        # Back to tuples: sorted insertion compares events, and lists of mixed
        # kinds would not compare the same way.
        t, i, a, m = row
        return (int(t), str(i), float(a), str(m))

    def add(
        self,
        *,
        time_ms: int,
        transaction_id: str,
        amount: float,
        merchant_id: str,
        max_events: int,
        allowed_lateness_ms: int,
    ) -> tuple[bool, bool]:
        """Add one transaction; (duplicate, late). A duplicate changes nothing."""
        return self.add_event(
            (time_ms, transaction_id, float(amount), merchant_id),
            max_events=max_events,
            allowed_lateness_ms=allowed_lateness_ms,
        )

    def windows(self, as_of_ms: int) -> dict[str, dict[str, Any]]:
        """Count, sum, max and distinct merchants per window ending at ``as_of_ms``.

        Events after ``as_of_ms`` are not counted, so asking as of an
        out-of-order transaction's own time describes the account as it was then.
        """
        events = self.events
        i = bisect_right(events, as_of_ms, key=event_time)
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
